package stsauth_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stsauth/stsauth"
	"github.com/stsauth/stsauth/ststest"
)

// noRetry makes the SDK try once, so STS call counts are exact.
func noRetry(o *sts.Options) { o.RetryMaxAttempts = 1 }

// newSTS starts an emulator for the test.
func newSTS(t *testing.T) *ststest.Server {
	t.Helper()
	srv := ststest.NewServer()
	t.Cleanup(srv.Close)
	return srv
}

func newSource(t *testing.T, srv *ststest.Server, opts ...stsauth.Option) *stsauth.TokenSource {
	t.Helper()
	ts, err := stsauth.NewTokenSource(srv.Client(noRetry), opts...)
	require.NoError(t, err)
	t.Cleanup(func() { ts.Close() })
	return ts
}

// fetchJWKS reads the emulator's keys the way a verifier would: through
// OIDC discovery.
func fetchJWKS(t *testing.T, issuer string) jose.JSONWebKeySet {
	t.Helper()
	var discovery struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	getJSON(t, issuer+"/.well-known/openid-configuration", &discovery)
	require.Equal(t, issuer, discovery.Issuer)
	var keys jose.JSONWebKeySet
	getJSON(t, discovery.JWKSURI, &keys)
	return keys
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.NoError(t, json.NewDecoder(resp.Body).Decode(v))
}

// verify checks a bearer token as a third-party API would, with go-jose:
// signature against the JWKS, issuer, audience and expiry.
func verify(keys jose.JSONWebKeySet, issuer, authorization string, audience ...string) (jwt.Claims, error) {
	raw, ok := strings.CutPrefix(authorization, "Bearer ")
	if !ok {
		return jwt.Claims{}, fmt.Errorf("no bearer token in %q", authorization[:min(len(authorization), 10)])
	}
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256, jose.ES384})
	if err != nil {
		return jwt.Claims{}, err
	}
	var claims jwt.Claims
	if err := tok.Claims(keys, &claims); err != nil {
		return jwt.Claims{}, err
	}
	err = claims.ValidateWithLeeway(jwt.Expected{Issuer: issuer, AnyAudience: audience, Time: time.Now()}, 0)
	return claims, err
}

func TestEndToEndTokensVerifyAtTheUpstream(t *testing.T) {
	for _, alg := range []string{stsauth.RS256, stsauth.ES384} {
		t.Run(alg, func(t *testing.T) {
			srv := newSTS(t)
			keys := fetchJWKS(t, srv.Issuer())
			var mu sync.Mutex
			var verified []jwt.Claims
			upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				claims, err := verify(keys, srv.Issuer(), r.Header.Get("Authorization"), "https://api.example.com")
				if err != nil {
					http.Error(w, err.Error(), http.StatusUnauthorized)
					return
				}
				mu.Lock()
				verified = append(verified, claims)
				mu.Unlock()
				io.WriteString(w, "ok")
			}))
			defer upstream.Close()

			src := newSource(t, srv, stsauth.WithSigningAlgorithm(alg), stsauth.WithDuration(15*time.Minute))
			client := &http.Client{Transport: &stsauth.Transport{
				Source:   src,
				Audience: stsauth.StaticAudience("https://api.example.com", "https://other.example.com"),
			}}
			for range 5 {
				req, err := http.NewRequest(http.MethodGet, upstream.URL, nil)
				require.NoError(t, err)
				req.Header.Set("Authorization", "Basic c3RhbGU6Y3JlZHM=") // replaced
				resp, err := client.Do(req)
				require.NoError(t, err)
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
			}
			require.Len(t, verified, 5)
			assert.ElementsMatch(t, jwt.Audience{"https://api.example.com", "https://other.example.com"}, verified[0].Audience)
			exp := verified[0].Expiry.Time()
			assert.WithinDuration(t, time.Now().Add(15*time.Minute), exp, time.Minute)
			assert.Equal(t, 1, srv.Calls(), "one STS call serves every request")
		})
	}
}

func TestThousandConcurrentFirstCallsThroughTheSDKMakeOneSTSCall(t *testing.T) {
	srv := newSTS(t)
	release := srv.Hold()
	src := newSource(t, srv)
	aud := stsauth.MustAudience("https://api.example.com")

	const callers = 1000
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for range callers {
		wg.Go(func() {
			_, err := src.Token(context.Background(), aud)
			errs <- err
		})
	}
	require.Eventually(t, func() bool { return srv.Calls() == 1 }, 10*time.Second, time.Millisecond)
	release()
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	assert.Equal(t, 1, srv.Calls())
	assert.Equal(t, 1, srv.CallsFor("https://api.example.com"))
}

func TestSTSErrorCodesReachTheCaller(t *testing.T) {
	srv := newSTS(t)
	srv.FailAll("OutboundWebIdentityFederationDisabledException")
	src := newSource(t, srv)
	_, err := src.Token(context.Background(), stsauth.MustAudience("https://api.example.com"))
	require.Error(t, err)
	var te *stsauth.TokenError
	require.ErrorAs(t, err, &te)
	assert.Equal(t, "[https://api.example.com]", te.Audience.String())
	var api smithy.APIError
	require.ErrorAs(t, err, &api)
	assert.Equal(t, "OutboundWebIdentityFederationDisabledException", api.ErrorCode())
}

func TestRefreshFailureThroughTheSDKServesTheCachedToken(t *testing.T) {
	srv := newSTS(t)
	// A token that lives 61 s against a 60 s skew: STS granted less than
	// the skew, so it is refreshed half way, at about 30 s. Rather than
	// wait, ask STS for tokens that are already inside the window.
	srv.SetTokenLifetime(40 * time.Second)
	src := newSource(t, srv, stsauth.WithDuration(time.Hour), stsauth.WithRefreshSkew(50*time.Minute))
	aud := stsauth.MustAudience("https://api.example.com")
	first, err := src.Token(context.Background(), aud)
	require.NoError(t, err)

	// Every later STS call fails; callers keep getting the valid token.
	srv.FailAll("InternalFailure")
	for range 50 {
		tok, err := src.Token(context.Background(), aud)
		require.NoError(t, err)
		require.Equal(t, first.Value(), tok.Value())
	}
}

func TestNewClientWithoutRegionFailsClearly(t *testing.T) {
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_DEFAULT_REGION", "")
	t.Setenv("AWS_CONFIG_FILE", os.DevNull)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", os.DevNull)
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	_, err := stsauth.NewClient(context.Background(), []string{"https://api.example.com"})
	require.ErrorIs(t, err, stsauth.ErrNoRegion)
	assert.Contains(t, err.Error(), "AWS_REGION")

	_, err = stsauth.NewClient(context.Background(), []string{"bad value"})
	require.ErrorIs(t, err, stsauth.ErrInvalidAudience)
}
