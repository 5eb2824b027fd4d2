package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/stsauth/stsauth"
	"github.com/stsauth/stsauth/ststest"
	"github.com/stsauth/stsauth/verify"
)

// mint returns a token from the emulator for audience, signed with alg.
func mint(t *testing.T, srv *ststest.Server, alg, audience string) string {
	t.Helper()
	ts, err := stsauth.NewTokenSource(srv.Client(), stsauth.WithSigningAlgorithm(alg))
	require.NoError(t, err)
	t.Cleanup(func() { ts.Close() })
	tok, err := ts.Token(context.Background(), stsauth.MustAudience(audience))
	require.NoError(t, err)
	return tok.Value()
}

// countingTransport counts the requests it sends.
type countingTransport struct {
	n    atomic.Int64
	next http.RoundTripper
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.next.RoundTrip(r)
}

// newTestVerifier returns a verifier trusting issuer whose fetches, through
// the loopback-only transport, are counted.
func newTestVerifier(t *testing.T, issuer string) (*verifier, *countingTransport) {
	t.Helper()
	base := loopbackTransport()
	t.Cleanup(base.CloseIdleConnections)
	ct := &countingTransport{next: base}
	v, err := newVerifier(issuer, ct)
	require.NoError(t, err)
	return v, ct
}

func TestVerifyAgainstSTSTest(t *testing.T) {
	t.Parallel()
	srv := ststest.NewServer()
	t.Cleanup(srv.Close)
	v, fetches := newTestVerifier(t, srv.Issuer())

	rs := mint(t, srv, stsauth.RS256, "https://rs.example")
	es := mint(t, srv, stsauth.ES384, "https://es.example")
	require.NoError(t, v.verify(context.Background(), rs))
	require.NoError(t, v.verify(context.Background(), es))
	require.NoError(t, v.verify(context.Background(), rs))
	assert.Equal(t, int64(2), fetches.n.Load(), "discovery and JWKS once for the issuer")

	parts := strings.Split(rs, ".")
	claims, err := base64.RawURLEncoding.DecodeString(parts[1])
	require.NoError(t, err)
	forged := parts[0] + "." + base64.RawURLEncoding.EncodeToString(bytes.Replace(claims, []byte("rs.example"), []byte("xx.example"), 1)) + "." + parts[2]
	esParts := strings.Split(es, ".")
	tests := []struct {
		name, token, want string
	}{
		{"forged claims", forged, "bad signature"},
		{"signature of another token", parts[0] + "." + parts[1] + "." + strings.Split(mint(t, srv, stsauth.RS256, "https://other.example"), ".")[2], "bad signature"},
		{"ES384 signature cut", esParts[0] + "." + esParts[1] + "." + esParts[2][:20], "bad signature"},
		{"alg none", b64json(`{"alg":"none"}`) + "." + parts[1] + ".", "not an RS256 or ES384 compact JWS"},
		{"unknown kid", b64json(`{"alg":"RS256","kid":"nope"}`) + "." + parts[1] + "." + parts[2], `unknown signing key: kid "nope"`},
		{"RS256 header on the EC key", b64json(fmt.Sprintf(`{"alg":"RS256","kid":%q}`, kidOf(t, es))) + "." + esParts[1] + "." + esParts[2], "unsupported signing algorithm"},
	}
	for _, tc := range tests {
		err := v.verify(context.Background(), tc.token)
		if assert.Error(t, err, tc.name) {
			assert.Contains(t, err.Error(), tc.want, tc.name)
			assert.NotContains(t, err.Error(), parts[2], tc.name)
		}
	}
	assert.Equal(t, int64(2), fetches.n.Load(), "an unknown kid does not refetch inside the cooldown")

	past := ststest.NewUnstartedServer()
	past.Now = func() time.Time { return time.Now().Add(-2 * time.Hour) }
	past.Start()
	t.Cleanup(past.Close)
	pv, _ := newTestVerifier(t, past.Issuer())
	err = pv.verify(context.Background(), mint(t, past, stsauth.RS256, "https://rs.example"))
	require.Error(t, err)
	assert.ErrorIs(t, err, verify.ErrExpired)
}

// TestVerifyTrustsOnlyTheIssuerFlag checks that a token is verified only
// when it comes from -issuer: another loopback issuer's token, validly
// signed by its own keys, is refused without fetching anything it names,
// and without -issuer no token is verified.
func TestVerifyTrustsOnlyTheIssuerFlag(t *testing.T) {
	t.Parallel()
	trusted, other := ststest.NewServer(), ststest.NewServer()
	t.Cleanup(trusted.Close)
	t.Cleanup(other.Close)
	v, fetches := newTestVerifier(t, trusted.Issuer())

	err := v.verify(context.Background(), mint(t, other, stsauth.RS256, "https://api.example.com"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), fmt.Sprintf("issuer %q is not the trusted issuer %q", other.Issuer(), trusted.Issuer()))
	assert.Zero(t, fetches.n.Load(), "fetched keys of an issuer a token named")
	assert.Zero(t, other.JWKSCalls())
	require.NoError(t, v.verify(context.Background(), mint(t, trusted, stsauth.RS256, "https://api.example.com")))

	none, noneFetches := newTestVerifier(t, "")
	err = none.verify(context.Background(), mint(t, trusted, stsauth.RS256, "https://api.example.com"))
	assert.ErrorIs(t, err, errNoIssuer)
	assert.Zero(t, noneFetches.n.Load())
}

// b64json encodes a JSON text as a JWT segment.
func b64json(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// kidOf returns the kid of a token's header.
func kidOf(t *testing.T, token string) string {
	t.Helper()
	h, err := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[0])
	require.NoError(t, err)
	var hdr struct{ Kid string }
	require.NoError(t, json.Unmarshal(h, &hdr))
	return hdr.Kid
}

// TestVerifyFetchesOnlyLoopback checks that no issuer or jwks_uri off
// loopback is ever requested: the verifier's transport fails the test if
// it is asked to.
func TestVerifyFetchesOnlyLoopback(t *testing.T) {
	t.Parallel()
	var jwksURI atomic.Value
	jwksURI.Store("")
	issuer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"issuer":%q,"jwks_uri":%q}`, "http://"+r.Host, jwksURI.Load())
	}))
	t.Cleanup(issuer.Close)
	issuerPort := issuer.URL[strings.LastIndex(issuer.URL, ":")+1:]
	var offLoopback atomic.Int64
	base := loopbackTransport()
	t.Cleanup(base.CloseIdleConnections)
	guard := roundTripperFunc(func(r *http.Request) (*http.Response, error) {
		if _, err := checkLoopbackURL(r.URL.String()); err != nil {
			offLoopback.Add(1)
			return nil, errors.New("test: off-loopback fetch")
		}
		return base.RoundTrip(r)
	})

	for _, iss := range []string{"https://abcd.tokens.sts.global.api.aws", "http://169.254.169.254", "http://user@127.0.0.1", "ftp://127.0.0.1", "http://[fe80::1%25lo]"} {
		_, err := newVerifier(iss, guard)
		if assert.Error(t, err, iss) {
			assert.Contains(t, err.Error(), "only a loopback issuer can be verified", iss)
		}
	}

	token := func(iss string) string {
		return b64json(`{"alg":"RS256","kid":"k"}`) + "." + b64json(fmt.Sprintf(`{"iss":%q,"exp":%d}`, iss, time.Now().Add(time.Hour).Unix())) + ".c2ln"
	}
	for _, tc := range []struct{ iss, jwks, want string }{
		{issuer.URL, "https://keys.example/jwks.json", `jwks_uri "https://keys.example/jwks.json" is not on the issuer's origin`},
		{"http://localhost:" + issuerPort, "http://10.0.0.1/jwks.json", "is not on the issuer's origin"},
	} {
		jwksURI.Store(tc.jwks)
		v, err := newVerifier(tc.iss, guard)
		require.NoError(t, err, tc.iss)
		err = v.verify(context.Background(), token(tc.iss))
		if assert.Error(t, err, tc.iss) {
			assert.Contains(t, err.Error(), tc.want, tc.iss)
		}
	}
	assert.Zero(t, offLoopback.Load())
	assert.Error(t, loopbackOnly("tcp", "10.0.0.1:80", nil))
	assert.NoError(t, loopbackOnly("tcp", "127.0.0.2:80", nil))
	assert.NoError(t, loopbackOnly("tcp6", "[::1]:80", nil))
}

// roundTripperFunc adapts a function to an http.RoundTripper.
type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestHandlerReportsVerification sends emulator tokens through the handler
// and reads jwt_verified and jwt_claims from the answer and the log.
func TestHandlerReportsVerification(t *testing.T) {
	t.Parallel()
	sts := ststest.NewServer()
	t.Cleanup(sts.Close)
	var logs bytes.Buffer
	v, _ := newTestVerifier(t, sts.Issuer())
	srv := httptest.NewServer(handler(slog.New(slog.NewJSONHandler(&logs, nil)), v))
	t.Cleanup(srv.Close)

	send := func(auth string) echo {
		req, err := http.NewRequest(http.MethodGet, srv.URL+"/v", nil)
		require.NoError(t, err)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		res, err := srv.Client().Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		var e echo
		require.NoError(t, json.NewDecoder(res.Body).Decode(&e))
		return e
	}
	token := mint(t, sts, stsauth.ES384, "https://api.example.com")
	e := send("Bearer " + token)
	require.NotNil(t, e.JWTVerified)
	assert.True(t, *e.JWTVerified, e.JWTError)
	var claims struct{ Iss, Aud string }
	require.NoError(t, json.Unmarshal(e.JWTClaims, &claims))
	assert.Equal(t, sts.Issuer(), claims.Iss)
	assert.Equal(t, "https://api.example.com", claims.Aud)

	parts := strings.Split(token, ".")
	e = send("Bearer " + parts[0] + "." + parts[1] + "." + strings.Repeat("A", 128))
	require.NotNil(t, e.JWTVerified)
	assert.False(t, *e.JWTVerified)
	assert.Contains(t, e.JWTError, "verify: bad signature")

	e = send("Basic c3RhbGU=")
	assert.Nil(t, e.JWTVerified)
	assert.Empty(t, e.JWTClaims)

	log := logs.String()
	assert.Contains(t, log, `"jwt_verified":true`)
	assert.Contains(t, log, `"jwt_verified":false,"jwt_error":"verify: bad signature`)
	assert.NotContains(t, log, parts[2], "log holds the signature")
	assert.NotContains(t, log, token)
}
