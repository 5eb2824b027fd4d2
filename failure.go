package stsauth

import (
	"context"
	"errors"
	"net"
	"net/http"

	"github.com/aws/smithy-go"
)

// A failureKind sorts a fetch error by what it is about, which decides
// what it backs off (the audience set, or the whole source), whether
// another region may do better ([WithFallback]) and whether [Explain] calls
// it transient: one classification, so what Explain says is what the
// source does.
type failureKind int

const (
	// failRequest is about the request: the audience set, IAM, validation.
	// Every region would give the same answer.
	failRequest failureKind = iota
	// failCredentials is about the AWS credentials: every set, every region.
	failCredentials
	// failAccount is about the account (the feature is disabled): every
	// set, every region.
	failAccount
	// failRegion is STS in this region failing or refusing to serve:
	// throttling, a 5xx, the region disabled. Every set, this region.
	failRegion
	// failNetwork is no answer at all: the network, a timeout.
	failNetwork
)

// An stsError is what the library knows of an STS error code: what it is
// about, which the token source acts on, and, for people, its cause and
// fix.
type stsError struct {
	kind       failureKind
	cause, fix string
}

// codeFederationDisabled is the code of an account that has not enabled
// outbound identity federation.
const codeFederationDisabled = "OutboundWebIdentityFederationDisabledException"

// retryFix is the fix of a failure of STS in a region, which the source
// retries by itself.
const retryFix = "retry later (the token source does, with backoff, and asks the next Region if there are fallbacks: WithFallback, stsproxy --sts-fallback-regions)"

// stsErrors are the STS error codes the library knows, with their aliases
// in stsAliases. A code not listed is about the request unless it comes
// with a 5xx or 429 status (see classify).
var stsErrors = map[string]stsError{
	codeFederationDisabled: {
		kind:  failAccount,
		cause: "outbound identity federation is not enabled for the AWS account",
		fix:   "enable it, once per account: aws iam enable-outbound-web-identity-federation; then aws iam get-outbound-web-identity-federation-info shows the issuer to register with the APIs you call",
	},
	"AccessDenied": {
		kind:  failRequest,
		cause: "IAM denies sts:GetWebIdentityToken for these audiences to the caller",
		fix:   "attach an identity policy that allows it to the caller's role or user (LeastPrivilegePolicy builds one; stsproxy policy prints it); if one is attached, a service control policy, resource control policy, permissions boundary or VPC endpoint policy denies the call",
	},
	codeSessionEscalation: {
		kind:  failRequest,
		cause: "the token would outlive the session of the credentials that ask for it",
		fix:   "use credentials with a longer session (a role's maximum session duration), a shorter token duration, or pass the credentials provider (WithCredentials) so the duration is fitted to the session",
	},
	"JWTPayloadSizeExceededException": {
		kind:  failRequest,
		cause: "the token would be too large",
		fix:   "send fewer or shorter session tags (WithTags, stsproxy --token-tag) or fewer audiences",
	},
	"RegionDisabledException": {
		kind:  failRegion,
		cause: "STS is not enabled in this Region for the account",
		fix:   "activate the Region in the account settings (IAM console, Security Token Service regions), or use an enabled Region (AWS_REGION)",
	},
	"Throttling": {
		kind:  failRegion,
		cause: "STS throttled the call",
		fix:   retryFix + "; it calls STS once per audience set per refresh, not per request: if many processes share the account, spread their refreshes or use fewer audience sets",
	},
	"InvalidClientTokenId": {
		kind:  failCredentials,
		cause: "the credentials are not valid AWS credentials",
		fix:   "check which credentials the AWS SDK found (environment, profile, role) and replace them",
	},
	"ExpiredToken": {
		kind:  failCredentials,
		cause: "the credentials have expired, or this machine's clock is off",
		fix:   "refresh them (aws sso login, or restart the pod for fresh Pod Identity or IRSA credentials) and sync the clock with NTP",
	},
	"ValidationError": {
		kind:  failRequest,
		cause: "STS refused a parameter of the request",
		fix:   "check the audiences (1 to 10 values of 1 to 1000 characters), the duration (60 s to 1 h) and the tags (up to 50)",
	},
	"InternalFailure": {
		kind:  failRegion,
		cause: "an error on the STS side",
		fix:   retryFix,
	},
}

// stsAliases are STS error codes that mean what another does.
var stsAliases = map[string]string{
	"AccessDeniedException":       "AccessDenied",
	"ThrottlingException":         "Throttling",
	"RequestLimitExceeded":        "Throttling",
	"UnrecognizedClientException": "InvalidClientTokenId",
	"SignatureDoesNotMatch":       "InvalidClientTokenId",
	"IncompleteSignature":         "InvalidClientTokenId",
	"MissingAuthenticationToken":  "InvalidClientTokenId",
	"ExpiredTokenException":       "ExpiredToken",
	"RequestExpired":              "ExpiredToken",
	"ServiceUnavailable":          "InternalFailure",
	"InternalError":               "InternalFailure",
}

// lookupSTSError returns what the library knows of an STS error code,
// through its aliases.
func lookupSTSError(code string) (stsError, bool) {
	if alias, ok := stsAliases[code]; ok {
		code = alias
	}
	e, ok := stsErrors[code]
	return e, ok
}

// classify sorts a fetch error: by its STS error code when it has a known
// one, else as the network's when no answer came (a net.Error, a timeout),
// else by its HTTP status (5xx and 429 are the region's).
func classify(err error) failureKind {
	if errors.Is(err, ErrCredentialsExpiring) || errors.Is(err, ErrNoCredentials) {
		return failCredentials
	}
	var api smithy.APIError
	if errors.As(err, &api) {
		if e, ok := lookupSTSError(api.ErrorCode()); ok {
			return e.kind
		}
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) {
		return failNetwork
	}
	if st := httpStatus(err); st >= 500 || st == http.StatusTooManyRequests {
		return failRegion
	}
	return failRequest
}

// httpStatus returns the HTTP status of STS's answer in err's chain, or 0.
func httpStatus(err error) int {
	var resp interface{ HTTPStatusCode() int }
	if errors.As(err, &resp) {
		return resp.HTTPStatusCode()
	}
	return 0
}

// sourceWide reports whether err is a failure every audience set would
// share: credentials, throttling, the feature disabled, STS or the network
// failing. Validation and access errors may be about the set and are not.
func sourceWide(err error) bool { return classify(err) != failRequest }

// regional reports whether err is a failure that STS in another region may
// not have: throttling, a 5xx, the region disabled, the network, a timeout.
// It is also what [Explanation.Transient] reports.
func regional(err error) bool {
	k := classify(err)
	return k == failRegion || k == failNetwork
}
