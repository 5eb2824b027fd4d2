package stsauth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stsauth/stsauth/ststest"
)

// TestExplain gets real errors from a TokenSource over the emulator and
// checks what Explain makes of each.
func TestExplain(t *testing.T) {
	t.Parallel()
	closedURL := func() string {
		s := httptest.NewServer(http.NotFoundHandler())
		s.Close()
		return s.URL
	}
	failing := func(code string) func(*ststest.Server) { return func(s *ststest.Server) { s.FailAll(code) } }
	noCreds := aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		return aws.Credentials{}, errors.New("failed to refresh cached credentials, no EC2 IMDS role found")
	})
	tests := []struct {
		name      string
		setup     func(*ststest.Server)
		opt       func(*sts.Options)
		opts      []Option
		aud       Audience
		code      string
		fix       string // a substring of the fix
		transient bool
	}{
		{name: "federation disabled", setup: failing("OutboundWebIdentityFederationDisabledException"),
			code: "OutboundWebIdentityFederationDisabledException", fix: "aws iam enable-outbound-web-identity-federation"},
		{name: "access denied", setup: failing("AccessDenied"), code: "AccessDenied", fix: "LeastPrivilegePolicy"},
		{name: "payload too large", setup: failing("JWTPayloadSizeExceededException"), code: "JWTPayloadSizeExceededException", fix: "fewer or shorter session tags"},
		{name: "region disabled", setup: failing("RegionDisabledException"), code: "RegionDisabledException", fix: "activate the Region", transient: true},
		{name: "throttled", setup: failing("Throttling"), code: "Throttling", fix: "retry later", transient: true},
		{name: "STS internal failure", setup: failing("InternalFailure"), code: "InternalFailure", fix: "retry later", transient: true},
		{name: "invalid credentials (alias)", setup: failing("SignatureDoesNotMatch"), code: "SignatureDoesNotMatch", fix: "replace them"},
		{name: "expired credentials", setup: failing("ExpiredTokenException"), code: "ExpiredTokenException", fix: "sync the clock"},
		{name: "validation", setup: failing("ValidationError"), code: "ValidationError", fix: "1 to 10 values"},
		{name: "unknown STS code", setup: failing("SomethingNewException"), code: "SomethingNewException", fix: "API reference for SomethingNewException"},
		{name: "no credentials", opt: func(o *sts.Options) { o.Credentials = noCreds }, code: CodeNoCredentials, fix: "EKS Pod Identity or IRSA"},
		{name: "session ending within a minute", setup: func(s *ststest.Server) { s.SetSessionExpiry(time.Now().Add(50 * time.Second)) },
			code: CodeCredentialsExpiring, fix: "longer session"},
		{name: "unreachable", opt: func(o *sts.Options) { o.BaseEndpoint = aws.String(closedURL()) }, code: CodeUnreachable, fix: "VPC endpoint for STS", transient: true},
		{name: "timeout", setup: func(s *ststest.Server) { t.Cleanup(s.Hold()) }, opts: []Option{WithFetchTimeout(50 * time.Millisecond)},
			code: CodeTimeout, fix: "WithFetchTimeout", transient: true},
		{name: "not a token", opt: func(o *sts.Options) { o.BaseEndpoint = aws.String(notATokenURL(t)) }, code: CodeBadResponse, fix: "AWS_ENDPOINT_URL_STS"},
		// What the source treats as the Region failing (source-wide backoff,
		// the next Region with WithFallback) is transient, whatever the code.
		{name: "HTML error page", opt: func(o *sts.Options) {
			o.BaseEndpoint = aws.String(answerURL(t, http.StatusBadGateway, "text/html", "<html><body><h1>502 Bad Gateway</h1></body></html>"))
		}, code: CodeServerError, fix: "retry later", transient: true},
		{name: "unknown STS code with a 5xx", opt: func(o *sts.Options) {
			o.BaseEndpoint = aws.String(answerURL(t, http.StatusServiceUnavailable, "text/xml", stsErrorXML("SomethingNewException")))
		}, code: "SomethingNewException", fix: "retry later", transient: true},
		{name: "unknown STS code with a 4xx", opt: func(o *sts.Options) {
			o.BaseEndpoint = aws.String(answerURL(t, http.StatusBadRequest, "text/xml", stsErrorXML("SomethingNewException")))
		}, code: "SomethingNewException", fix: "API reference for SomethingNewException"},
		{name: "zero audience", aud: Audience{}, code: CodeInvalidRequest, fix: "1 to 10 audience values"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := ststest.NewServer()
			t.Cleanup(srv.Close)
			if tc.setup != nil {
				tc.setup(srv)
			}
			var logs bytes.Buffer
			client := srv.Client(func(o *sts.Options) {
				o.RetryMaxAttempts = 1
				if tc.opt != nil {
					tc.opt(o)
				}
			})
			ts, err := NewTokenSource(client, append([]Option{WithLogger(slog.New(slog.NewJSONHandler(&logs, nil)))}, tc.opts...)...)
			require.NoError(t, err)
			t.Cleanup(func() { ts.Close() })
			aud := apiAudience
			if tc.name == "zero audience" {
				aud = tc.aud
			}
			_, err = ts.Token(context.Background(), aud)
			require.Error(t, err)
			x := Explain(err)
			require.NotNil(t, x)
			assert.Equal(t, tc.code, x.Code, "Explain(%v).Code", err)
			assert.Contains(t, x.Fix, tc.fix, "Explain(%v).Fix", err)
			assert.NotEmpty(t, x.Cause)
			assert.Equal(t, tc.transient, x.Transient, "Explain(%v).Transient", err)
			assert.Equal(t, regional(err), x.Transient, "Explain(%v).Transient, and what the source does", err)
			if tc.code == CodeInvalidRequest || tc.code == CodeTimeout {
				// Nothing was fetched, so nothing was logged; or the
				// caller's wait ended with the fetch's own timeout, which
				// may or may not have been logged before Close.
				return
			}
			ts.Close() // waits for the fetch, which logs before it ends
			var rec map[string]any
			require.NoError(t, json.Unmarshal(logs.Bytes(), &rec), "one log record: %s", logs.String())
			assert.Equal(t, tc.code, rec["code"], "the fetch failure's log line")
			assert.Equal(t, x.Fix, rec["fix"], "the fetch failure's log line")
		})
	}
}

func TestExplainWithoutAFetch(t *testing.T) {
	t.Parallel()
	assert.Nil(t, Explain(nil))
	for _, tc := range []struct {
		err  error
		code string
	}{
		{ErrNoRegion, CodeNoRegion},
		{fmt.Errorf("stsauth: %w: 169.254.169.254", ErrHostNotAllowed), CodeHostNotAllowed},
		{fmt.Errorf("stsauth: %w", ErrCleartext), CodeCleartext},
		{fmt.Errorf("wrapped: %w", ErrClosed), CodeClosed},
		{&TokenError{Audience: apiAudience, Err: context.Canceled}, CodeCanceled},
		{errors.New("something else"), CodeBadResponse},
	} {
		assert.Equal(t, tc.code, Explain(tc.err).Code, "Explain(%v).Code", tc.err)
	}
}

// TestNoCredentialsSkipsTheSTSCall checks that when the *sts.Client's own
// provider finds no credentials, the fetch fails with ErrNoCredentials at
// once instead of making an STS call (and its retries) that must fail, and
// that a provider the caller passed, which may differ from the client's,
// still leaves it to the STS call.
func TestNoCredentialsSkipsTheSTSCall(t *testing.T) {
	t.Parallel()
	srv := ststest.NewServer()
	t.Cleanup(srv.Close)
	tried := 0
	noCreds := aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		tried++
		return aws.Credentials{}, errors.New("no EC2 IMDS role found")
	})
	ts, err := NewTokenSource(srv.Client(func(o *sts.Options) { o.Credentials = noCreds }))
	require.NoError(t, err)
	t.Cleanup(func() { ts.Close() })
	_, err = ts.Token(context.Background(), apiAudience)
	require.ErrorIs(t, err, ErrNoCredentials)
	assert.Contains(t, err.Error(), "no EC2 IMDS role found")
	assert.Equal(t, 0, srv.Calls())
	assert.Equal(t, 1, tried, "asked once, not once per SDK retry")
}

func TestTokenShortened(t *testing.T) {
	t.Parallel()
	t.Run("not shortened", func(t *testing.T) {
		ts, _, _ := sessionSource(t, 2*time.Hour, false)
		tok, err := ts.Token(context.Background(), apiAudience)
		require.NoError(t, err)
		assert.Equal(t, NotShortened, tok.Shortened)
		assert.Equal(t, time.Hour, tok.Lifetime)
	})
	t.Run("to the session", func(t *testing.T) {
		ts, _, _ := sessionSource(t, 20*time.Minute, false)
		tok, err := ts.Token(context.Background(), apiAudience)
		require.NoError(t, err)
		assert.Equal(t, ShortenedToSession, tok.Shortened)
		assert.Equal(t, 19*time.Minute, tok.Lifetime)
	})
	t.Run("after a refusal", func(t *testing.T) {
		ts, _, _ := sessionSource(t, 20*time.Minute, true)
		tok, err := ts.Token(context.Background(), apiAudience)
		require.NoError(t, err)
		assert.Equal(t, ShortenedAfterRefusal, tok.Shortened)
		assert.Equal(t, 15*time.Minute, tok.Lifetime)
	})
	t.Run("by STS", func(t *testing.T) {
		ts, srv, _ := sessionSource(t, 2*time.Hour, false)
		srv.SetTokenLifetime(10 * time.Minute)
		tok, err := ts.Token(context.Background(), apiAudience)
		require.NoError(t, err)
		assert.Equal(t, ShortenedBySTS, tok.Shortened)
		assert.Equal(t, 10*time.Minute, tok.Lifetime)
	})
	assert.Equal(t, "shortened to session", ShortenedToSession.String())
	assert.Equal(t, "Shortening(9)", Shortening(9).String())
}

// notATokenURL returns the URL of an endpoint that answers every
// GetWebIdentityToken call with something that is not a JWT.
func notATokenURL(t *testing.T) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/xml")
		fmt.Fprint(w, `<GetWebIdentityTokenResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><GetWebIdentityTokenResult>`+
			`<WebIdentityToken>not a token</WebIdentityToken><Expiration>2030-01-01T00:00:00Z</Expiration>`+
			`</GetWebIdentityTokenResult></GetWebIdentityTokenResponse>`)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// answerURL returns the URL of an endpoint that answers every call with
// status, a body of contentType.
func answerURL(t *testing.T, status int, contentType, body string) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(status)
		fmt.Fprint(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// stsErrorXML is an STS error response with code.
func stsErrorXML(code string) string {
	return `<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Receiver</Type>` +
		`<Code>` + code + `</Code><Message>m</Message></Error><RequestId>r</RequestId></ErrorResponse>`
}

// TestExplainTransientIsWhatTheSourceDoes: for every STS error code the
// library knows, aliases included, with the status STS gives it, Explain's
// Transient is what classify makes of it, which the source's backoff and
// region fallback act on; and the codes of the Region failing are the
// transient ones.
func TestExplainTransientIsWhatTheSourceDoes(t *testing.T) {
	t.Parallel()
	apiErr := func(code string, status int) error {
		return &smithy.OperationError{ServiceID: "STS", OperationName: "GetWebIdentityToken", Err: &smithyhttp.ResponseError{
			Response: &smithyhttp.Response{Response: &http.Response{StatusCode: status}},
			Err:      &smithy.GenericAPIError{Code: code}}}
	}
	codes := slices.Concat(slices.Collect(maps.Keys(stsErrors)), slices.Collect(maps.Keys(stsAliases)))
	for _, code := range codes {
		for _, status := range []int{400, 403, 429, 500, 503} {
			err := apiErr(code, status)
			x := Explain(err)
			e, ok := lookupSTSError(code)
			require.True(t, ok, code)
			assert.Equal(t, x.Transient, e.kind == failRegion, "Explain(%s, %d).Transient", code, status)
			assert.Equal(t, regional(err), x.Transient, "Explain(%s, %d).Transient", code, status)
			assert.Equal(t, code, x.Code)
		}
	}
	for code, want := range map[string]bool{
		"RegionDisabledException": true, "Throttling": true, "ThrottlingException": true, "RequestLimitExceeded": true,
		"InternalFailure": true, "ServiceUnavailable": true, "InternalError": true,
		"AccessDenied": false, "ValidationError": false, codeFederationDisabled: false,
		"InvalidClientTokenId": false, "UnrecognizedClientException": false, "ExpiredToken": false, "RequestExpired": false,
	} {
		assert.Equal(t, want, Explain(apiErr(code, 400)).Transient, "Explain(%s).Transient", code)
	}
}

func TestExplainMintRate(t *testing.T) {
	t.Parallel()
	ts, _, _ := newTestSource(t, WithMintRate(1, 1)) // the fake clock stands still: no refill
	_, err := ts.Token(context.Background(), apiAudience)
	require.NoError(t, err)
	_, err = ts.Token(context.Background(), MustAudience("https://other.example.com"))
	require.ErrorIs(t, err, ErrMintRateExceeded)
	x := Explain(err)
	assert.Equal(t, CodeMintRateExceeded, x.Code)
	assert.Contains(t, x.Fix, "--token-mint-rate")
	assert.True(t, x.Transient)
}
