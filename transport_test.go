package stsauth

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/aws/smithy-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// roundTripperFunc adapts a function to http.RoundTripper.
type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// recorder is a base RoundTripper that remembers what it was asked to send.
type recorder struct {
	sent atomic.Int32
	last atomic.Pointer[http.Request]
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	r.sent.Add(1)
	r.last.Store(req)
	return &http.Response{StatusCode: http.StatusOK, Body: http.NoBody, Request: req}, nil
}

// trackedBody records whether it was closed.
type trackedBody struct {
	io.Reader
	closed atomic.Bool
}

func (b *trackedBody) Close() error { b.closed.Store(true); return nil }

func newBody() *trackedBody { return &trackedBody{Reader: strings.NewReader("payload")} }

func TestTransportReplacesAuthorizationOnAClone(t *testing.T) {
	ts, fake, _ := newTestSource(t)
	base := &recorder{}
	tr := &Transport{Source: ts, Audience: FixedAudience(apiAudience), Base: base}

	req := httptest.NewRequest(http.MethodPost, "https://api.example.com/v1/things?x=1", newBody())
	req.Header.Set("Authorization", "Basic dXNlcjpwYXNz")
	req.Header["authorization"] = []string{"sneaky lower-case duplicate"}
	req.Header.Add("X-Trace", "a")
	req.Header.Add("X-Trace", "b")
	before := req.Header.Clone()

	_, err := tr.RoundTrip(req)
	require.NoError(t, err)
	sent := base.last.Load()
	tok, err := ts.Token(context.Background(), apiAudience)
	require.NoError(t, err)

	assert.Equal(t, []string{"Bearer " + tok.Value()}, sent.Header["Authorization"], "replaced, never merged")
	assert.NotContains(t, sent.Header, "authorization")
	assert.Equal(t, []string{"a", "b"}, sent.Header["X-Trace"])
	assert.Equal(t, before, req.Header, "the caller's request is unmodified")
	assert.NotSame(t, req, sent)
	assert.Equal(t, 1, fake.Calls())

	sent.Header.Add("X-Trace", "c") // the copy shares no backing array with the caller's
	assert.Equal(t, []string{"a", "b"}, req.Header["X-Trace"])
}

func TestTransportCustomHeader(t *testing.T) {
	ts, _, _ := newTestSource(t)
	base := &recorder{}
	tr := &Transport{Source: ts, Audience: FixedAudience(apiAudience), Base: base, Header: "x-api-token"}
	req := httptest.NewRequest(http.MethodGet, "https://api.example.com/", nil)
	req.Header.Set("Authorization", "Basic keep")
	_, err := tr.RoundTrip(req)
	require.NoError(t, err)
	sent := base.last.Load()
	assert.True(t, strings.HasPrefix(sent.Header.Get("X-Api-Token"), "Bearer eyJ"))
	assert.Equal(t, "Basic keep", sent.Header.Get("Authorization"))
}

func TestTransportHostAudience(t *testing.T) {
	ts, fake, _ := newTestSource(t)
	base := &recorder{}
	tr := &Transport{Source: ts, Base: base} // nil Audience: host-derived
	for _, u := range []string{"https://API.example.com:8443/a", "https://api.example.com/b", "http://api.example.com/c"} {
		_, err := tr.RoundTrip(httptest.NewRequest(http.MethodGet, u, nil))
		require.NoError(t, err)
	}
	require.Len(t, fake.inputs, 2)
	assert.Equal(t, []string{"https://api.example.com"}, fake.inputs[0].Audience)
	assert.Equal(t, []string{"http://api.example.com"}, fake.inputs[1].Audience)
}

func TestTransportErrorsCloseBodyAndSendNothing(t *testing.T) {
	denied := &smithy.GenericAPIError{Code: "AccessDenied", Message: "no"}
	allow, err := ParseAllowedHosts("api.example.com", "*.trusted.example")
	require.NoError(t, err)
	tests := []struct {
		name    string
		url     string
		tr      func(ts *TokenSource) *Transport
		failSTS bool
		wantIs  error
		wantMsg string
	}{
		{name: "STS failure", url: "https://api.example.com/", failSTS: true, wantMsg: "AccessDenied",
			tr: func(ts *TokenSource) *Transport { return &Transport{Source: ts, Audience: FixedAudience(apiAudience)} }},
		{name: "host not in allowlist", url: "https://evil.example.com/", wantIs: ErrHostNotAllowed, wantMsg: "evil.example.com is not in the allowed hosts",
			tr: func(ts *TokenSource) *Transport { return &Transport{Source: ts, AllowedHosts: allow} }},
		{name: "allowlisted host, wrong port", url: "https://api.example.com:8443/", wantIs: ErrHostNotAllowed,
			tr: func(ts *TokenSource) *Transport {
				a, _ := ParseAllowedHosts("api.example.com:443")
				return &Transport{Source: ts, AllowedHosts: a}
			}},
		{name: "IMDS v4", url: "http://169.254.169.254/latest/meta-data/", wantIs: ErrHostNotAllowed, wantMsg: "instance metadata",
			tr: func(ts *TokenSource) *Transport { return &Transport{Source: ts, Audience: FixedAudience(apiAudience)} }},
		{name: "IMDS v6", url: "http://[fd00:ec2::254]/latest/", wantIs: ErrHostNotAllowed,
			tr: func(ts *TokenSource) *Transport { return &Transport{Source: ts, Audience: FixedAudience(apiAudience)} }},
		// net/http maps these with IDNA to 169.254.169.254 and instance-data.
		{name: "IMDS in fullwidth digits", url: "http://１６９.２５４.１６９.２５４/latest/meta-data/", wantIs: ErrHostNotAllowed, wantMsg: "punycode",
			tr: func(ts *TokenSource) *Transport { return &Transport{Source: ts, Audience: FixedAudience(apiAudience)} }},
		{name: "IMDS with ideographic full stops", url: "http://169。254。169。254/", wantIs: ErrHostNotAllowed,
			tr: func(ts *TokenSource) *Transport { return &Transport{Source: ts, Audience: FixedAudience(apiAudience)} }},
		{name: "instance-data in fullwidth letters", url: "http://ｉｎｓｔａｎｃｅ-data/", wantIs: ErrHostNotAllowed,
			tr: func(ts *TokenSource) *Transport { return &Transport{Source: ts, Audience: FixedAudience(apiAudience)} }},
		{name: "link-local even if allowlisted", url: "http://169.254.170.2/v2/credentials", wantIs: ErrHostNotAllowed,
			tr: func(ts *TokenSource) *Transport {
				a, _ := ParseAllowedHosts("169.254.170.2")
				return &Transport{Source: ts, AllowedHosts: a}
			}},
		{name: "audience resolver error", url: "https://api.example.com/", wantIs: ErrInvalidAudience,
			tr: func(ts *TokenSource) *Transport {
				return &Transport{Source: ts, Audience: AudienceFunc(func(*http.Request) (Audience, error) { return NewAudience() })}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts, fake, _ := newTestSource(t)
			if tc.failSTS {
				fake.set(func(f *fakeSTS) { f.fail = denied })
			}
			base := &recorder{}
			tr := tc.tr(ts)
			tr.Base = base
			body := newBody()
			req := httptest.NewRequest(http.MethodPost, tc.url, body)

			resp, err := tr.RoundTrip(req)
			require.Error(t, err)
			assert.Nil(t, resp)
			assert.True(t, body.closed.Load(), "body closed on the error path")
			assert.Zero(t, base.sent.Load(), "nothing sent")
			if tc.wantIs != nil {
				assert.ErrorIs(t, err, tc.wantIs)
			}
			if tc.failSTS {
				var te *TokenError
				assert.True(t, errors.As(err, &te), "wraps the token source's error")
			}
			assert.Contains(t, err.Error(), tc.wantMsg)
		})
	}
}

func TestTransportAllowlistAdmits(t *testing.T) {
	ts, _, _ := newTestSource(t)
	allow, err := ParseAllowedHosts("api.example.com:443", "*.trusted.example")
	require.NoError(t, err)
	base := &recorder{}
	tr := &Transport{Source: ts, Base: base, AllowedHosts: allow}
	for _, u := range []string{"https://api.example.com/", "https://API.example.com:443/", "http://a.b.trusted.example:8080/"} {
		_, err := tr.RoundTrip(httptest.NewRequest(http.MethodGet, u, nil))
		require.NoError(t, err, u)
	}
	assert.EqualValues(t, 3, base.sent.Load())
}

func TestTransportRedirectToOtherHostCarriesNoToken(t *testing.T) {
	var sawAuth []string
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sawAuth = append(sawAuth, r.Header.Get("Authorization"))
	}))
	defer evil.Close()
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/same":
			http.Redirect(w, r, "/landing", http.StatusFound)
		case "/landing":
			sawAuth = append(sawAuth, r.Header.Get("Authorization"))
		default:
			// Another host: 127.0.0.1 vs localhost are different hosts.
			http.Redirect(w, r, strings.Replace(evil.URL, "127.0.0.1", "localhost", 1)+"/steal", http.StatusFound)
		}
	}))
	defer origin.Close()

	ts, _, _ := newTestSource(t)
	client := &http.Client{Transport: &Transport{Source: ts, Audience: FixedAudience(apiAudience)}}

	resp, err := client.Get(origin.URL + "/same")
	require.NoError(t, err)
	resp.Body.Close()
	resp, err = client.Get(origin.URL + "/elsewhere")
	require.NoError(t, err)
	resp.Body.Close()

	require.Len(t, sawAuth, 2)
	assert.True(t, strings.HasPrefix(sawAuth[0], "Bearer "), "same-host redirect keeps the token")
	assert.Empty(t, sawAuth[1], "cross-host redirect carries no token")
}

func TestTransportRedirectToAllowlistedHostCarriesToken(t *testing.T) {
	var got string
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Get("Authorization")
	}))
	defer other.Close()
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, strings.Replace(other.URL, "127.0.0.1", "localhost", 1), http.StatusFound)
	}))
	defer origin.Close()

	ts, _, _ := newTestSource(t)
	allow, err := ParseAllowedHosts("127.0.0.1", "localhost")
	require.NoError(t, err)
	client := &http.Client{Transport: &Transport{Source: ts, Audience: FixedAudience(apiAudience), AllowedHosts: allow}}
	resp, err := client.Get(origin.URL)
	require.NoError(t, err)
	resp.Body.Close()
	assert.True(t, strings.HasPrefix(got, "Bearer "))
}

func TestTransportPrime(t *testing.T) {
	ts, fake, _ := newTestSource(t)
	tr := &Transport{Source: ts, Audience: FixedAudience(apiAudience), Base: &recorder{}}
	require.NoError(t, tr.Prime(context.Background()))
	assert.Equal(t, 1, fake.Calls())
	_, err := tr.RoundTrip(httptest.NewRequest(http.MethodGet, "https://api.example.com/", nil))
	require.NoError(t, err)
	assert.Equal(t, 1, fake.Calls(), "the primed token serves the first request")

	require.Error(t, (&Transport{Source: ts}).Prime(context.Background()), "host-derived audiences cannot be primed")
}

func TestTransportZeroValueFailsClearly(t *testing.T) {
	body := newBody()
	_, err := (&Transport{}).RoundTrip(httptest.NewRequest(http.MethodPost, "https://api.example.com/", body))
	require.ErrorContains(t, err, "no Source")
	assert.True(t, body.closed.Load())
}
