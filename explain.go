package stsauth

import (
	"context"
	"errors"
	"net"
	"net/url"
	"strconv"

	"github.com/aws/smithy-go"
)

// An Explanation says what a failure to get a token means and how to fix
// it. [Explain] returns one; the library's own log line for a failed fetch
// carries its Code and Fix, and `stsproxy doctor` prints them.
type Explanation struct {
	// Code names the failure: the STS error code, such as "AccessDenied",
	// or, for a failure STS did not answer with a code, one of the Code*
	// constants.
	Code string
	// Cause says in one sentence what went wrong.
	Cause string
	// Fix says in one sentence what to do about it.
	Fix string
	// Transient reports whether the failure is STS in this Region failing
	// or refusing to serve, or no answer at all, rather than something
	// about the request, the credentials or the account: throttling, an
	// error on the STS side (any 5xx or 429 answer, an HTML error page from
	// something in front of STS included), RegionDisabledException, the
	// network, a timeout. It is the classification a [TokenSource] acts
	// on: such a failure backs off the whole source, whose next call, a
	// probe, retries it, and with [WithFallback] the same fetch asks the
	// next Region; the others go to no other Region. A Region that stays
	// disabled needs the Fix.
	Transient bool
}

// Codes of the failures that carry no STS error code.
const (
	// CodeNoCredentials: the AWS SDK found no credentials ([ErrNoCredentials]).
	CodeNoCredentials = "NoCredentials"
	// CodeCredentialsExpiring: the credentials expire before even a
	// [MinDuration] token would end ([ErrCredentialsExpiring]).
	CodeCredentialsExpiring = "CredentialsExpiring"
	// CodeNoRegion: no AWS Region is configured ([ErrNoRegion]).
	CodeNoRegion = "NoRegion"
	// CodeTimeout: STS did not answer in time.
	CodeTimeout = "Timeout"
	// CodeUnreachable: the STS endpoint could not be reached.
	CodeUnreachable = "Unreachable"
	// CodeBadResponse: STS answered, but not with a token the library
	// accepts (not a compact JWS, no expiry, too large, unreadable).
	CodeBadResponse = "BadResponse"
	// CodeServerError: the STS endpoint, or something in front of it,
	// answered with a 5xx or 429 status and no STS error code (an HTML
	// error page from a load balancer or proxy, say).
	CodeServerError = "ServerError"
	// CodeInvalidRequest: the audience or an option is invalid
	// ([ErrInvalidAudience], [ErrInvalidOption]); nothing was sent.
	CodeInvalidRequest = "InvalidRequest"
	// CodeMintRateExceeded: the budget for minting tokens for audience
	// sets not cached is spent ([ErrMintRateExceeded]); nothing was sent.
	CodeMintRateExceeded = "MintRateExceeded"
	// CodeHostNotAllowed: [Transport] refused to send a token to the host
	// ([ErrHostNotAllowed]).
	CodeHostNotAllowed = "HostNotAllowed"
	// CodeCleartext: [Transport] refused to send a token in clear text
	// ([ErrCleartext]).
	CodeCleartext = "Cleartext"
	// CodeCanceled: the caller's context ended first.
	CodeCanceled = "Canceled"
	// CodeClosed: the [TokenSource] was closed ([ErrClosed]).
	CodeClosed = "Closed"
	// CodeUnknown: none of the above.
	CodeUnknown = "Unknown"
)

// ErrNoCredentials is wrapped by the error of a fetch whose AWS credentials
// could not be retrieved (see [WithCredentials]): the AWS SDK's default chain
// found none, or its source failed. The STS call is not made.
var ErrNoCredentials = errors.New("stsauth: no AWS credentials")

// credentialChainTried is what the AWS SDK's default credential chain looks
// at, in order, for messages.
const credentialChainTried = "environment variables, the shared config and credentials files, web identity, " +
	"the container credentials endpoint and EC2 instance metadata"

// credentialsFix is the fix for missing credentials.
const credentialsFix = "give the process AWS credentials: AWS_PROFILE (after aws sso login) or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; " +
	"on AWS, a role (EKS Pod Identity or IRSA, an ECS task role, an EC2 instance profile)"

// Explain returns what err, an error of a [TokenSource], a [Transport] or
// [NewClient], means and how to fix it; nil for a nil err. It reads the
// error's chain (the STS error code through [smithy.APIError], the
// library's sentinels, network and context errors); it never quotes a
// token, since no error holds one.
func Explain(err error) *Explanation {
	if err == nil {
		return nil
	}
	var api smithy.APIError
	switch {
	case errors.Is(err, ErrClosed):
		return &Explanation{Code: CodeClosed, Cause: "the token source was closed", Fix: "get tokens from a source that is not closed"}
	case errors.Is(err, ErrInvalidAudience), errors.Is(err, ErrInvalidOption):
		return &Explanation{Code: CodeInvalidRequest, Cause: "the audience or an option is invalid, so nothing was sent to STS",
			Fix: "pass 1 to 10 audience values of 1 to 1000 characters, and options within the ranges their docs give"}
	case errors.Is(err, ErrMintRateExceeded):
		return &Explanation{Code: CodeMintRateExceeded, Cause: "the budget for minting tokens for audience sets not cached is spent, so no STS call was made",
			Fix:       "retry after a moment; if this many distinct audience sets are expected, raise the budget (WithMintRate, stsproxy --token-mint-rate and --token-mint-burst) and the cache (--token-cache-size)",
			Transient: true}
	case errors.Is(err, ErrHostNotAllowed):
		return &Explanation{Code: CodeHostNotAllowed, Cause: "a token must not go to this host: link-local or instance metadata, or outside the allowed hosts",
			Fix: "add the host to the allowed hosts (Transport.AllowedHosts, stsproxy --allowed-hosts) if it should receive tokens"}
	case errors.Is(err, ErrCleartext):
		return &Explanation{Code: CodeCleartext, Cause: "the token would travel in clear text: plain http to a host that is not loopback with RequireTLS, or plain http through a forward proxy",
			Fix: "use https, or keep the host out of the forward proxy (NO_PROXY)"}
	case errors.Is(err, ErrNoRegion):
		return &Explanation{Code: CodeNoRegion, Cause: "no AWS Region is configured (options, AWS_REGION, AWS_DEFAULT_REGION, the shared config) and the EC2 instance metadata service gave none; GetWebIdentityToken is served only by regional STS endpoints",
			Fix: "set AWS_REGION (for example AWS_REGION=us-east-1) or a region in the profile; on EC2, let the process reach the instance metadata service"}
	case errors.Is(err, ErrCredentialsExpiring):
		return &Explanation{Code: CodeCredentialsExpiring, Cause: "the AWS credentials' session ends before even a 60 s token would",
			Fix: "renew the credentials, or use credentials with a longer session (a role's maximum session duration)"}
	case errors.Is(err, ErrNoCredentials):
		x := &Explanation{Code: CodeNoCredentials, Cause: "the AWS SDK got no credentials from " + credentialChainTried, Fix: credentialsFix}
		if unanswered(err) {
			x.Cause += ", which did not answer (not on EC2?)"
		}
		return x
	case errors.As(err, &api):
		code := api.ErrorCode()
		if e, ok := lookupSTSError(code); ok {
			return &Explanation{Code: code, Cause: e.cause, Fix: e.fix, Transient: regional(err)}
		}
		x := &Explanation{Code: code, Cause: "STS answered " + code,
			Fix: "see the AWS STS GetWebIdentityToken API reference for " + code, Transient: regional(err)}
		if x.Transient {
			x.Cause += " with HTTP status " + strconv.Itoa(httpStatus(err)) + ": an error on the STS side"
			x.Fix = retryFix + "; " + x.Fix
		}
		return x
	case errors.Is(err, context.Canceled):
		return &Explanation{Code: CodeCanceled, Cause: "the caller gave up before STS answered", Fix: "nothing, if it meant to; otherwise give the request more time"}
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		return &Explanation{Code: CodeTimeout, Cause: "STS did not answer in time" + endpointOf(err),
			Fix:       "check that the regional STS endpoint is reachable from here: egress rules, a VPC endpoint for STS, HTTPS_PROXY; the fetch timeout (WithFetchTimeout) bounds the wait",
			Transient: regional(err)}
	case isNetwork(err):
		return &Explanation{Code: CodeUnreachable, Cause: "the STS endpoint could not be reached" + endpointOf(err),
			Fix:       "check that the regional STS endpoint is reachable from here: DNS, egress rules, a VPC endpoint for STS, HTTPS_PROXY; and that AWS_ENDPOINT_URL_STS, if set, is right",
			Transient: regional(err)}
	case regional(err):
		// An answer with a 5xx or 429 status and no STS error code:
		// not STS's XML, or none the SDK could read.
		return &Explanation{Code: CodeServerError,
			Cause:     "the STS endpoint, or something in front of it, answered HTTP " + strconv.Itoa(httpStatus(err)) + " with no STS error code",
			Fix:       retryFix + "; if it lasts, check what stands between here and STS (HTTPS_PROXY, a VPC endpoint) and the endpoint (AWS_ENDPOINT_URL_STS)",
			Transient: true}
	case !isOperationError(err) || isDeserialization(err):
		// The call returned, but not with a token the library takes: it
		// checked the answer after the SDK (no OperationError), or the SDK
		// could not read it.
		return &Explanation{Code: CodeBadResponse, Cause: "the STS endpoint answered with something that is not a usable token",
			Fix: "check that the endpoint is AWS STS (AWS_ENDPOINT_URL_STS) and that nothing between here and it rewrites responses"}
	}
	return &Explanation{Code: CodeUnknown, Cause: "the call failed before STS answered",
		Fix: "see the error; check the STS endpoint and the credentials"}
}

// endpointOf returns " (URL)" for the request URL in err's chain, or "".
func endpointOf(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) && ue.URL != "" {
		if u, perr := url.Parse(ue.URL); perr == nil {
			return " (" + u.Scheme + "://" + u.Host + ")"
		}
	}
	return ""
}

// isTimeout reports whether err's chain holds a network timeout.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// isNetwork reports whether err's chain holds a network error.
func isNetwork(err error) bool {
	var ne net.Error
	var oe *net.OpError
	return errors.As(err, &ne) || errors.As(err, &oe)
}

// unanswered reports whether err's chain shows a source that did not
// answer: a timeout or a refused connection.
func unanswered(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || isTimeout(err) || isNetwork(err)
}

// isOperationError reports whether err's chain holds the SDK's error of a
// call that failed.
func isOperationError(err error) bool {
	var oe *smithy.OperationError
	return errors.As(err, &oe)
}

// isDeserialization reports whether the SDK could not read STS's answer.
func isDeserialization(err error) bool {
	var de *smithy.DeserializationError
	return errors.As(err, &de)
}
