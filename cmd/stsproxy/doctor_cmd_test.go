package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stsauth/stsauth/ststest"
)

// doerFunc adapts a function to the SDK's HTTP client interface.
type doerFunc func(*http.Request) (*http.Response, error)

func (f doerFunc) Do(r *http.Request) (*http.Response, error) { return f(r) }

// tokenRE finds the token in a GetWebIdentityToken response.
var tokenRE = regexp.MustCompile(`<WebIdentityToken>([^<]*)</WebIdentityToken>`)

// rewriteTokens returns an HTTP client that replaces every token STS
// returns through next with f(token).
func rewriteTokens(next sts.HTTPClient, f func(string) string) sts.HTTPClient {
	return doerFunc(func(r *http.Request) (*http.Response, error) {
		resp, err := next.Do(r)
		if err != nil || resp.StatusCode != http.StatusOK {
			return resp, err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		body = tokenRE.ReplaceAllFunc(body, func(m []byte) []byte {
			return []byte("<WebIdentityToken>" + f(string(tokenRE.FindSubmatch(m)[1])) + "</WebIdentityToken>")
		})
		resp.Body = io.NopCloser(bytes.NewReader(body))
		resp.ContentLength = int64(len(body))
		resp.Header.Del("Content-Length")
		return resp, nil
	})
}

// tamperSignature returns an HTTP client that changes one character of the
// signature of every token STS returns through next.
func tamperSignature(next sts.HTTPClient) sts.HTTPClient {
	return rewriteTokens(next, func(tok string) string {
		sig := []byte(tok[strings.LastIndexByte(tok, '.')+1:])
		i := len(sig) / 2
		if sig[i] == 'A' {
			sig[i] = 'B'
		} else {
			sig[i] = 'A'
		}
		return tok[:strings.LastIndexByte(tok, '.')+1] + string(sig)
	})
}

// doctorRun runs "stsproxy doctor" against an emulator prepared by setup,
// with the STS options changed by opt, and returns the exit code, the JSON
// report and the text output of a second, identical run.
type doctorCase struct {
	name  string
	args  []string
	setup func(*ststest.Server)
	opt   func(o *sts.Options, srv *ststest.Server)
	code  int
	// want maps a check name prefix to its wanted status and, for a
	// failure, a substring of its fix.
	want map[string][2]string
	// detail maps a check name prefix to a substring of its detail, and
	// noDetail to one its detail must not hold.
	detail, noDetail map[string]string
}

func TestDoctor(t *testing.T) {
	t.Parallel()
	const aud = "https://api.example.com"
	audArgs := []string{"--token-audience", aud}
	t0 := time.Now()
	failing := func(code string) func(*ststest.Server) { return func(s *ststest.Server) { s.FailAll(code) } }
	tests := []doctorCase{
		{name: "all pass", args: append(audArgs, "--token-tag", "team=payments", "--token-signing-algorithm", "ES384", "--token-duration", "15m"), code: 0,
			want: map[string][2]string{"region": {statusPass}, "credentials": {statusPass}, "caller identity": {statusPass},
				"GetWebIdentityToken": {statusPass}, "issuer keys": {statusPass}, "token": {statusPass}},
			detail: map[string]string{"region": "us-east-1 (from the test)", "token": "valid: iss http://127.0.0.1"}},
		{name: "missing region", args: audArgs, code: 1,
			opt:  func(o *sts.Options, _ *ststest.Server) { o.Region = "" },
			want: map[string][2]string{"region": {statusFail, "AWS_REGION (for example us-east-1), or add --local-sts"}, "credentials": {statusPass}, "caller identity": {statusSkip}, "GetWebIdentityToken": {statusSkip}}},
		{name: "no credentials", args: audArgs, code: 1,
			opt: func(o *sts.Options, _ *ststest.Server) {
				o.Credentials = aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
					return aws.Credentials{}, errors.New("failed to refresh cached credentials, no EC2 IMDS role found")
				})
			},
			want:   map[string][2]string{"region": {statusPass}, "credentials": {statusFail, "EKS Pod Identity or IRSA"}, "GetWebIdentityToken": {statusSkip}},
			detail: map[string]string{"credentials": "no EC2 IMDS role found"}},
		{name: "invalid credentials", args: audArgs, code: 1,
			setup: func(s *ststest.Server) { s.FailCallerIdentity("InvalidClientTokenId") },
			want:  map[string][2]string{"caller identity": {statusFail, "replace them"}, "GetWebIdentityToken": {statusPass}}},
		{name: "expired credentials", args: audArgs, code: 1,
			setup:  func(s *ststest.Server) { s.FailCallerIdentity("ExpiredToken") },
			want:   map[string][2]string{"caller identity": {statusFail, "aws sso login"}},
			detail: map[string]string{"caller identity": "the credentials have expired"}},
		{name: "federation disabled", args: audArgs, code: 1, setup: failing("OutboundWebIdentityFederationDisabledException"),
			want: map[string][2]string{"caller identity": {statusPass}, "GetWebIdentityToken": {statusFail, "aws iam enable-outbound-web-identity-federation"},
				"issuer keys": {statusSkip}, "token": {statusSkip}}},
		{name: "access denied", args: append(audArgs, "--token-tag", "team=payments"), code: 1, setup: failing("AccessDenied"),
			want: map[string][2]string{"GetWebIdentityToken": {statusFail, `"ForAllValues:StringEquals": {
          "sts:IdentityTokenAudience": [
            "https://api.example.com"
          ]`}}},
		{name: "access denied names the caller", args: audArgs, code: 1, setup: failing("AccessDenied"),
			want: map[string][2]string{"GetWebIdentityToken": {statusFail, "to attach to the role or user behind arn:aws:sts::123456789012:assumed-role/ststest/ststest-session"}}},
		{name: "session shorter than the token: tokens fitted to it, as the proxy gets", args: audArgs, code: 0,
			setup: func(s *ststest.Server) { s.SetSessionExpiry(time.Now().Add(20 * time.Minute)) },
			want: map[string][2]string{"credentials": {statusPass}, "GetWebIdentityToken": {statusPass},
				"issuer keys": {statusPass}, "token": {statusPass}},
			detail:   map[string]string{"GetWebIdentityToken": "before a --token-duration 1h0m0s token would end, so the proxy asks for tokens that end a minute before them (18m"},
			noDetail: map[string]string{"GetWebIdentityToken": "refused"}},
		{name: "session expiry unknown up front: shorter tokens after a refused call", args: audArgs, code: 0,
			setup: func(s *ststest.Server) { s.SetSessionExpiry(time.Now().Add(20 * time.Minute)) },
			opt: func(o *sts.Options, _ *ststest.Server) {
				inner := o.Credentials
				o.Credentials = aws.CredentialsProviderFunc(func(ctx context.Context) (aws.Credentials, error) {
					c, err := inner.Retrieve(ctx)
					c.CanExpire, c.Expires = false, time.Time{}
					return c, err
				})
			},
			want: map[string][2]string{"GetWebIdentityToken": {statusPass}, "issuer keys": {statusPass}, "token": {statusPass}},
			detail: map[string]string{"GetWebIdentityToken": "STS refused --token-duration 1h0m0s because the credentials' session ends sooner, so the proxy gets 15m0s tokens after a refused call",
				"token": "lifetime 15m0s"}},
		{name: "STS mints shorter tokens than asked", args: audArgs, code: 1,
			setup:  func(s *ststest.Server) { s.SetTokenLifetime(10 * time.Minute) },
			want:   map[string][2]string{"GetWebIdentityToken": {statusPass}, "token": {statusFail, "points at AWS STS"}},
			detail: map[string]string{"token": "lifetime 10m0s is shorter than asked for (--token-duration 1h0m0s)"}},
		{name: "session ending within a minute", args: audArgs, code: 1,
			setup: func(s *ststest.Server) { s.SetSessionExpiry(time.Now().Add(50 * time.Second)) },
			want:  map[string][2]string{"credentials": {statusPass}, "GetWebIdentityToken": {statusFail, "renew the credentials, or use credentials with a longer session"}}},
		{name: "payload too large", args: audArgs, code: 1, setup: failing("JWTPayloadSizeExceededException"),
			want: map[string][2]string{"GetWebIdentityToken": {statusFail, "stsproxy --token-tag"}}},
		{name: "region disabled", args: audArgs, code: 1, setup: failing("RegionDisabledException"),
			want: map[string][2]string{"GetWebIdentityToken": {statusFail, "activate the Region in the account settings (IAM console, Security Token Service regions), or use an enabled Region (AWS_REGION); the proxy uses us-east-1"}}},
		{name: "throttled", args: audArgs, code: 1, setup: failing("Throttling"),
			want: map[string][2]string{"GetWebIdentityToken": {statusFail, "retry later"}}},
		{name: "STS unreachable", args: audArgs, code: 1,
			opt: func(o *sts.Options, _ *ststest.Server) {
				closed := httptest.NewServer(http.NotFoundHandler())
				closed.Close()
				o.BaseEndpoint = aws.String(closed.URL)
			},
			want: map[string][2]string{"caller identity": {statusFail, "is reachable"}, "GetWebIdentityToken": {statusFail, "is reachable"}}},
		{name: "issuer keys offline", args: audArgs, code: 1,
			setup: func(s *ststest.Server) { s.SetJWKSStatus(http.StatusServiceUnavailable) },
			want: map[string][2]string{"GetWebIdentityToken": {statusPass},
				"issuer keys": {statusFail, "reachable from them"}, "token": {statusSkip}}},
		{name: "altered signature", args: audArgs, code: 1,
			opt: func(o *sts.Options, _ *ststest.Server) { o.HTTPClient = tamperSignature(o.HTTPClient) },
			want: map[string][2]string{"GetWebIdentityToken": {statusPass}, "issuer keys": {statusPass},
				"token": {statusFail, "not signed by a key its issuer publishes"}}},
		{name: "malformed token from STS", args: audArgs, code: 1,
			opt: func(o *sts.Options, _ *ststest.Server) {
				o.HTTPClient = rewriteTokens(o.HTTPClient, func(string) string { return "not a token" })
			},
			want: map[string][2]string{"caller identity": {statusPass},
				"GetWebIdentityToken": {statusFail, "AWS_ENDPOINT_URL_STS"}, "issuer keys": {statusSkip}},
			detail: map[string]string{"GetWebIdentityToken": "not a compact JWS"}},
		{name: "any host allowed: no audience to test", args: []string{"--allowed-hosts", "*"}, code: 1,
			want: map[string][2]string{"GetWebIdentityToken": {statusFail, "--token-audience"}}},
		{name: "no audience to test", code: 1,
			want: map[string][2]string{"caller identity": {statusPass}, "GetWebIdentityToken": {statusFail, "--token-audience"}}},
		{name: "exact allowed hosts are tested, wildcards not", args: []string{"--allowed-hosts", "a.example,*.b.example,c.example:8443"}, code: 0,
			want: map[string][2]string{"GetWebIdentityToken [https://a.example]": {statusPass}, "GetWebIdentityToken [https://c.example]": {statusPass},
				"token [https://c.example]": {statusPass}}},
		{name: "pinned upstream's origin", args: []string{"--upstream-host", "API.example.com:8443"}, code: 0,
			want: map[string][2]string{"token [https://api.example.com]": {statusPass}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rep, text, code := runDoctorCase(t, tc, t0)
			assert.Equal(t, tc.code, code, "exit code; report:\n%s", text)
			assert.Equal(t, tc.code == 0, rep.Passed)
			for prefix, want := range tc.want {
				c, ok := findCheck(rep, prefix)
				if !assert.True(t, ok, "no check %q in:\n%s", prefix, text) {
					continue
				}
				assert.Equal(t, want[0], c.Status, "check %q: %s", c.Name, c.Detail)
				if want[1] != "" {
					assert.Contains(t, c.Fix, want[1], "fix of %q", c.Name)
				}
				if c.Status == statusFail {
					assert.NotEmpty(t, c.Fix, "a failed check says how to fix it")
					assert.Contains(t, text, "FAIL  "+c.Name)
				}
			}
			for prefix, want := range tc.detail {
				c, _ := findCheck(rep, prefix)
				assert.Contains(t, c.Detail, want, "detail of %q", prefix)
			}
			for prefix, unwanted := range tc.noDetail {
				c, _ := findCheck(rep, prefix)
				assert.NotContains(t, c.Detail, unwanted, "detail of %q", prefix)
			}
			assert.NotRegexp(t, `eyJ[A-Za-z0-9_-]+\.eyJ`, text, "a token in the output")
		})
	}
}

// runDoctorCase runs the doctor twice against one emulator, once with --json
// and once for people, and returns the decoded report, the text and the
// exit code (the same for both, or the test fails).
func runDoctorCase(t *testing.T, tc doctorCase, now time.Time) (doctorReport, string, int) {
	t.Helper()
	srv := ststest.NewServer()
	t.Cleanup(srv.Close)
	if tc.setup != nil {
		tc.setup(srv)
	}
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	deps := doctorDeps{
		aws: func(context.Context, *config, func(string) string) (doctorAWS, error) {
			o := srv.Client().Options()
			if tc.opt != nil {
				tc.opt(&o, srv)
			}
			return doctorAWS{opts: o, regionSource: "the test"}, nil
		},
		httpClient: &http.Client{Transport: tr},
		now:        func() time.Time { return now },
	}
	var jsonOut, textOut, stderr bytes.Buffer
	code := runDoctorWith(context.Background(), append([]string{"--json"}, tc.args...), envOf(nil), &jsonOut, &stderr, deps)
	var rep doctorReport
	dec := json.NewDecoder(&jsonOut)
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(&rep), "stdout is a JSON report; stderr: %s", stderr.String())
	textCode := runDoctorWith(context.Background(), tc.args, envOf(nil), &textOut, &stderr, deps)
	require.Equal(t, code, textCode, "--json changes only the format")
	return rep, textOut.String(), code
}

// findCheck returns the first check whose name starts with prefix.
func findCheck(rep doctorReport, prefix string) (doctorCheck, bool) {
	for _, c := range rep.Checks {
		if strings.HasPrefix(c.Name, prefix) {
			return c, true
		}
	}
	return doctorCheck{}, false
}

func TestDoctorLocalSTS(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"doctor", "--local-sts", "--token-audience", "https://api.example.com"}, envOf(nil), &stdout, &stderr)
	assert.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	assert.Contains(t, stdout.String(), "PASS  region: us-east-1 (from the --local-sts emulator)")
	assert.Contains(t, stdout.String(), "PASS  token [https://api.example.com]: valid")
	assert.Contains(t, stdout.String(), "all 6 checks passed")
}

func TestDoctorFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		args       []string
		code       int
		wantStdout string
		wantStderr string
	}{
		{"bad --json", []string{"--json=maybe"}, 2, "", `invalid --json "maybe"`},
		{"bad proxy flag", []string{"--token-duration", "2h"}, 2, "", `invalid --token-duration/TOKEN_DURATION "2h"`},
		{"help", []string{"--help"}, 0, "--json", ""},
		{"version", []string{"--version"}, 0, "stsproxy ", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), append([]string{"doctor"}, tc.args...), envOf(nil), &stdout, &stderr)
			assert.Equal(t, tc.code, code)
			assert.Contains(t, stdout.String(), tc.wantStdout)
			assert.Contains(t, stderr.String(), tc.wantStderr)
		})
	}
}
