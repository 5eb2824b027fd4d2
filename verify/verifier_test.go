package verify

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stsauth/stsauth/ststest"
)

const aud = "https://api.example.com"

func TestVerifyEmulatorTokens(t *testing.T) {
	t.Parallel()
	clock := newClock()
	const principal = "arn:aws:iam::111122223333:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_Dev_0123456789abcdef"
	s := startSTS(t, clock, func(s *ststest.Server) {
		s.AccountID = "111122223333"
		s.Region = "eu-west-1"
		s.OrgID = "o-a1b2c3d4e5"
		s.OUPath = []string{"o-a1b2c3d4e5/r-ab12/ou-ab12-11111111/"}
		s.PrincipalARN = principal
		s.IdentityStoreUserID = "90676b1a-0031-70a4-4b1a-1f1c2b3d4e5f"
	})
	session := clock.Now().Add(2 * time.Hour)
	s.SetSessionExpiry(session)
	v := newTestVerifier(t, clock, Config{
		Issuers:   []Issuer{{URL: s.URL, Account: "111122223333"}},
		Audiences: []string{"https://other.example.com", aud},
	})
	for _, alg := range []string{"RS256", "ES384"} {
		t.Run(alg, func(t *testing.T) {
			c, err := v.Verify(t.Context(), mint(t, s, alg, aud, "https://second.example.com"))
			require.NoError(t, err)
			assert.Equal(t, s.URL, c.Issuer)
			assert.Equal(t, principal, c.Subject)
			assert.Equal(t, []string{aud, "https://second.example.com"}, c.Audience)
			assert.Equal(t, clock.Now().Unix(), c.IssuedAt.Unix())
			assert.Equal(t, 5*time.Minute, c.Expiry.Sub(c.IssuedAt))
			assert.True(t, c.NotBefore.IsZero())
			assert.NotEmpty(t, c.ID)
			assert.Equal(t, AWSClaims{
				Account:             "111122223333",
				SourceRegion:        "eu-west-1",
				OrgID:               "o-a1b2c3d4e5",
				OUPath:              []string{"o-a1b2c3d4e5/r-ab12/ou-ab12-11111111/"},
				PrincipalID:         principal,
				IdentityStoreUserID: "90676b1a-0031-70a4-4b1a-1f1c2b3d4e5f",
				OriginalSessionExp:  session.UTC(),
			}, c.AWS)
			var raw map[string]any
			require.NoError(t, c.Unmarshal(&raw))
			assert.Equal(t, c.ID, raw["jti"])
		})
	}
	assert.Equal(t, 1, s.JWKSCalls(), "both algorithms are served from one fetch")
}

// TestVerifyRejects is the adversarial table: each token must be refused
// with the named error, and no error may contain the token.
func TestVerifyRejects(t *testing.T) {
	t.Parallel()
	clock := newClock()
	now := clock.Now()
	s := startSTS(t, clock, nil)
	ti := newTestIssuer(t)
	k := ti.keys
	v := newTestVerifier(t, clock, Config{
		Issuers: []Issuer{
			{URL: s.URL, Account: ststest.DefaultAccountID},
			{URL: ti.URL, Account: "123456789012"},
		},
		Audiences: []string{aud},
	})
	require.NoError(t, v.Prime(t.Context()))

	valid := func() map[string]any { return claimsFor(ti.URL, now, aud) }
	with := func(f func(c map[string]any)) map[string]any { c := valid(); f(c); return c }
	b64 := func(v any) string {
		j, err := json.Marshal(v)
		require.NoError(t, err)
		return base64.RawURLEncoding.EncodeToString(j)
	}
	good := sign(t, k.rsa, jose.RS256, "rsa-1", valid(), nil)
	parts := strings.Split(good, ".")
	pubDER, err := x509.MarshalPKIXPublicKey(&k.rsa.PublicKey)
	require.NoError(t, err)
	attacker, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	require.NoError(t, err)
	tests := []struct {
		name  string
		token string
		want  error
	}{
		{"alg none", b64(map[string]string{"alg": "none", "kid": "rsa-1"}) + "." + parts[1] + ".", ErrAlgorithm},
		{"alg none no signature part", b64(map[string]string{"alg": "none"}) + "." + parts[1], ErrMalformed},
		{"HS256 keyed with the RSA public key", sign(t, pubDER, jose.HS256, "rsa-1", valid(), nil), ErrAlgorithm},
		{"RS512", sign(t, k.rsa, jose.RS512, "rsa-1", valid(), nil), ErrAlgorithm},
		{"PS256", sign(t, k.rsa, jose.PS256, "rsa-1", valid(), nil), ErrAlgorithm},
		{"ES384 header naming the RSA key", sign(t, k.ec, jose.ES384, "rsa-1", valid(), nil), ErrAlgorithm},
		{"RS256 header naming the EC key", sign(t, k.rsa, jose.RS256, "ec-1", valid(), nil), ErrAlgorithm},
		{"kid from another issuer", sign(t, k.rsa, jose.RS256, "rsa-1", with(func(c map[string]any) {
			c["iss"] = s.URL
			c[AWSNamespace].(map[string]any)["aws_account"] = ststest.DefaultAccountID
		}), nil), ErrUnknownKey},
		{"emulator kid signed by another key", sign(t, k.rsa, jose.RS256, "RSA_0", with(func(c map[string]any) {
			c["iss"] = s.URL
			c[AWSNamespace].(map[string]any)["aws_account"] = ststest.DefaultAccountID
		}), nil), ErrSignature},
		{"embedded jwk is not followed", sign(t, attacker, jose.ES384, "ec-1", valid(), map[jose.HeaderKey]any{"jwk": true}), ErrSignature},
		{"attacker key with a known kid", sign(t, attacker, jose.ES384, "ec-1", valid(), nil), ErrSignature},
		{"jku and x5u are not followed", sign(t, attacker, jose.ES384, "ec-1", valid(), map[jose.HeaderKey]any{"jku": ti.URL + "/keys", "x5u": ti.URL + "/keys"}), ErrSignature},
		{"no kid", sign(t, k.rsa, jose.RS256, "", valid(), nil), ErrUnknownKey},
		{"tampered claims", parts[0] + "." + b64(with(func(c map[string]any) { c["sub"] = "arn:aws:iam::123456789012:role/admin" })) + "." + parts[2], ErrSignature},
		{"signature of another token", parts[0] + "." + parts[1] + "." + strings.Split(sign(t, k.rsa, jose.RS256, "rsa-1", with(func(c map[string]any) { c["jti"] = "x" }), nil), ".")[2], ErrSignature},
		{"expired", sign(t, k.rsa, jose.RS256, "rsa-1", with(func(c map[string]any) {
			c["iat"] = now.Add(-10 * time.Minute).Unix()
			c["exp"] = now.Add(-31 * time.Second).Unix()
		}), nil), ErrExpired},
		{"iat in the future", sign(t, k.rsa, jose.RS256, "rsa-1", with(func(c map[string]any) {
			c["iat"] = now.Add(31 * time.Second).Unix()
			c["exp"] = now.Add(10 * time.Minute).Unix()
		}), nil), ErrNotYetValid},
		{"nbf in the future", sign(t, k.rsa, jose.RS256, "rsa-1", with(func(c map[string]any) { c["nbf"] = now.Add(time.Minute).Unix() }), nil), ErrNotYetValid},
		{"lifetime over an hour", sign(t, k.rsa, jose.RS256, "rsa-1", with(func(c map[string]any) { c["exp"] = now.Add(time.Hour + 31*time.Second).Unix() }), nil), ErrLifetime},
		{"exp before iat", sign(t, k.rsa, jose.RS256, "rsa-1", with(func(c map[string]any) {
			c["iat"] = now.Unix()
			c["exp"] = now.Add(-time.Second).Unix()
		}), nil), ErrLifetime},
		{"no exp", sign(t, k.rsa, jose.RS256, "rsa-1", with(func(c map[string]any) { delete(c, "exp") }), nil), ErrMalformed},
		{"no iat", sign(t, k.rsa, jose.RS256, "rsa-1", with(func(c map[string]any) { delete(c, "iat") }), nil), ErrMalformed},
		{"exp a string", sign(t, k.rsa, jose.RS256, "rsa-1", with(func(c map[string]any) { c["exp"] = "soon" }), nil), ErrMalformed},
		{"wrong aud", sign(t, k.rsa, jose.RS256, "rsa-1", with(func(c map[string]any) { c["aud"] = "https://other.example.com" }), nil), ErrAudience},
		{"wrong aud array", sign(t, k.rsa, jose.RS256, "rsa-1", with(func(c map[string]any) { c["aud"] = []string{"a", "b"} }), nil), ErrAudience},
		{"no aud", sign(t, k.rsa, jose.RS256, "rsa-1", with(func(c map[string]any) { delete(c, "aud") }), nil), ErrAudience},
		{"iss not matching aws_account", sign(t, k.rsa, jose.RS256, "rsa-1", with(func(c map[string]any) {
			c[AWSNamespace].(map[string]any)["aws_account"] = "999999999999"
		}), nil), ErrAccount},
		{"no aws claims with a bound account", sign(t, k.rsa, jose.RS256, "rsa-1", with(func(c map[string]any) { delete(c, AWSNamespace) }), nil), ErrAccount},
		{"untrusted issuer", sign(t, k.rsa, jose.RS256, "rsa-1", with(func(c map[string]any) { c["iss"] = "https://evil.example.com" }), nil), ErrUntrustedIssuer},
		{"issuer with a trailing slash", sign(t, k.rsa, jose.RS256, "rsa-1", with(func(c map[string]any) { c["iss"] = ti.URL + "/" }), nil), ErrUntrustedIssuer},
		{"trailing garbage", good + "garbage!", ErrMalformed},
		{"trailing dot", good + ".", ErrMalformed},
		{"trailing space", good + " ", ErrMalformed},
		{"line break inside", parts[0] + ".\n" + parts[1] + "." + parts[2], ErrMalformed},
		{"JSON serialization", `{"payload":"` + parts[1] + `","protected":"` + parts[0] + `","signature":"` + parts[2] + `"}`, ErrMalformed},
		{"oversized", sign(t, k.rsa, jose.RS256, "rsa-1", with(func(c map[string]any) { c["pad"] = strings.Repeat("x", MaxTokenSize) }), nil), ErrMalformed},
		{"empty", "", ErrMalformed},
		{"claims not an object", parts[0] + "." + b64([]int{1}) + "." + parts[2], ErrMalformed},
		{"two parts", parts[0] + "." + parts[1], ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := v.Verify(t.Context(), tc.token)
			require.Error(t, err)
			assert.Nil(t, c)
			assert.ErrorIs(t, err, tc.want)
			var e *Error
			require.ErrorAs(t, err, &e)
			if len(tc.token) > 20 {
				for _, p := range strings.Split(tc.token, ".") {
					if len(p) > 20 {
						assert.NotContains(t, err.Error(), p, "the error must not contain the token")
					}
				}
			}
		})
	}
	// The valid token and its variants in accepted shapes pass.
	for name, tok := range map[string]string{
		"valid":     good,
		"aud array": sign(t, k.rsa, jose.RS256, "rsa-1", with(func(c map[string]any) { c["aud"] = []string{"x", aud} }), nil),
		"ES384":     sign(t, k.ec, jose.ES384, "ec-1", valid(), nil),
		"exp in leeway": sign(t, k.rsa, jose.RS256, "rsa-1", with(func(c map[string]any) {
			c["iat"] = now.Add(-time.Hour).Unix()
			c["exp"] = now.Add(-29 * time.Second).Unix()
		}), nil),
		"iat in leeway": sign(t, k.rsa, jose.RS256, "rsa-1", with(func(c map[string]any) { c["iat"] = now.Add(29 * time.Second).Unix() }), nil),
		"ou_path string": sign(t, k.rsa, jose.RS256, "rsa-1", with(func(c map[string]any) {
			c[AWSNamespace].(map[string]any)["ou_path"] = "o-a1b2c3d4e5/r-ab12/"
		}), nil),
		"emulator": mint(t, s, "ES384", aud),
	} {
		_, err := v.Verify(t.Context(), tok)
		assert.NoError(t, err, name)
	}
	assert.Len(t, ti.fetches(), 1, "no refused token caused a refetch: the cooldown holds")
}

func TestUntrustedIssuerIsNeverFetched(t *testing.T) {
	t.Parallel()
	clock := newClock()
	trusted := startSTS(t, clock, nil)
	other := startSTS(t, clock, nil)
	v := newTestVerifier(t, clock, Config{Issuers: []Issuer{{URL: trusted.URL}}, Audiences: []string{aud}})
	_, err := v.Verify(t.Context(), mint(t, other, "RS256", aud))
	assert.ErrorIs(t, err, ErrUntrustedIssuer)
	assert.Zero(t, other.JWKSCalls()+trusted.JWKSCalls())
}

func TestOneSharedFetch(t *testing.T) {
	t.Parallel()
	clock := newClock()
	s := startSTS(t, clock, nil)
	v := newTestVerifier(t, clock, Config{Issuers: []Issuer{{URL: s.URL}}, Audiences: []string{aud}})
	tok := mint(t, s, "RS256", aud)
	var wg sync.WaitGroup
	errs := make([]error, 50)
	for i := range errs {
		wg.Go(func() { _, errs[i] = v.Verify(context.Background(), tok) })
	}
	wg.Wait()
	for _, err := range errs {
		assert.NoError(t, err)
	}
	assert.Equal(t, 1, s.JWKSCalls(), "concurrent cold requests share one fetch")
}

// TestFetchOutlivesCancelledCaller: the request that starts a fetch gives
// up; the fetch goes on and serves the request that waits with it.
func TestFetchOutlivesCancelledCaller(t *testing.T) {
	t.Parallel()
	clock := newClock()
	ti := newTestIssuer(t)
	hold, arrived := make(chan struct{}), make(chan struct{}, 1)
	ti.set(func(ti *testIssuer) { ti.hold, ti.fetched = hold, arrived })
	v := newTestVerifier(t, clock, Config{Issuers: []Issuer{{URL: ti.URL, Account: "123456789012"}}, Audiences: []string{aud}})
	tok := sign(t, ti.keys.rsa, jose.RS256, "rsa-1", claimsFor(ti.URL, clock.Now(), aud), nil)

	ctx, cancel := context.WithCancel(t.Context())
	first := make(chan error, 1)
	go func() { _, err := v.Verify(ctx, tok); first <- err }()
	<-arrived // the fetch is in flight
	second := make(chan error, 1)
	go func() { _, err := v.Verify(t.Context(), tok); second <- err }()
	cancel()
	err := <-first
	assert.ErrorIs(t, err, ErrKeysUnavailable)
	assert.ErrorIs(t, err, context.Canceled)
	close(hold)
	assert.NoError(t, <-second)
	assert.Len(t, ti.fetches(), 1)
}

func TestFetchTimeout(t *testing.T) {
	t.Parallel()
	clock := newClock()
	ti := newTestIssuer(t)
	hold := make(chan struct{})
	t.Cleanup(func() { close(hold) })
	ti.set(func(ti *testIssuer) { ti.hold = hold })
	v := newTestVerifier(t, clock, Config{Issuers: []Issuer{{URL: ti.URL}}, Audiences: []string{aud}, FetchTimeout: 50 * time.Millisecond})
	err := v.Prime(t.Context())
	assert.ErrorIs(t, err, context.DeadlineExceeded)
}

func TestBackgroundRefresh(t *testing.T) {
	t.Parallel()
	clock := newClock()
	ti := newTestIssuer(t)
	ti.set(func(ti *testIssuer) { ti.cacheControl = "public, max-age=120" })
	v := newTestVerifier(t, clock, Config{Issuers: []Issuer{{URL: ti.URL}}, Audiences: []string{aud}})
	require.NoError(t, v.Prime(t.Context()))

	clock.Advance(119 * time.Second)
	_, err := v.Verify(t.Context(), sign(t, ti.keys.rsa, jose.RS256, "rsa-1", claimsFor(ti.URL, clock.Now(), aud), nil))
	require.NoError(t, err)
	v.fetching.Wait()
	require.Len(t, ti.fetches(), 1, "keys are fresh for max-age")

	// Due: the request is answered from the cache and a refresh starts.
	hold := make(chan struct{})
	ti.set(func(ti *testIssuer) { ti.hold = hold })
	clock.Advance(2 * time.Second)
	_, err = v.Verify(t.Context(), sign(t, ti.keys.rsa, jose.RS256, "rsa-1", claimsFor(ti.URL, clock.Now(), aud), nil))
	require.NoError(t, err, "a due refresh never holds a request with a known kid")
	close(hold)
	v.fetching.Wait()
	f := ti.fetches()
	require.Len(t, f, 2)
	assert.Empty(t, f[0].Get("Cache-Control"), "the first fetch may be served from a cache")
	assert.Equal(t, "no-cache", f[1].Get("Cache-Control"), "a refresh asks for a fresh copy")

	// A failed refresh keeps the keys and retries after the cooldown.
	ti.set(func(ti *testIssuer) { ti.status = http.StatusServiceUnavailable })
	clock.Advance(121 * time.Second)
	for range 3 {
		_, err = v.Verify(t.Context(), sign(t, ti.keys.ec, jose.ES384, "ec-1", claimsFor(ti.URL, clock.Now(), aud), nil))
		require.NoError(t, err)
		v.fetching.Wait()
	}
	assert.Len(t, ti.fetches(), 3, "one failed refresh, not one per request")
	clock.Advance(DefaultRefetchCooldown)
	_, err = v.Verify(t.Context(), sign(t, ti.keys.ec, jose.ES384, "ec-1", claimsFor(ti.URL, clock.Now(), aud), nil))
	require.NoError(t, err)
	v.fetching.Wait()
	assert.Len(t, ti.fetches(), 4, "retried after the cooldown")
}

func TestRefreshInterval(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cc   string
		want time.Duration
	}{
		{"", DefaultRefreshInterval},
		{"max-age=600", 10 * time.Minute},
		{"public, max-age=7200, must-revalidate", 2 * time.Hour},
		{"max-age=5", MinRefreshInterval},
		{"max-age=0", MinRefreshInterval},
		{"max-age=99999999999999999999", MaxRefreshInterval},
		{"max-age=172800", MaxRefreshInterval},
		{"no-store", MinRefreshInterval},
		{"no-cache, max-age=600", MinRefreshInterval},
		{"max-age=abc", DefaultRefreshInterval},
		{`max-age="600"`, 10 * time.Minute},
	} {
		assert.Equal(t, tc.want, refreshInterval(tc.cc), "refreshInterval(%q)", tc.cc)
	}
}

// TestRotation: the emulator rotates its keys; a token signed with the new
// key verifies after exactly one refetch, and with the JWKS endpoint down,
// tokens signed by known keys keep verifying.
func TestRotation(t *testing.T) {
	t.Parallel()
	clock := newClock()
	s := startSTS(t, clock, nil)
	v := newTestVerifier(t, clock, Config{Issuers: []Issuer{{URL: s.URL}}, Audiences: []string{aud}})
	require.NoError(t, v.Prime(t.Context()))
	old := mint(t, s, "RS256", aud)
	_, err := v.Verify(t.Context(), old)
	require.NoError(t, err)
	require.Equal(t, 1, s.JWKSCalls())

	s.Rotate()
	clock.Advance(DefaultRefetchCooldown)
	rotated := mint(t, s, "RS256", aud)
	_, err = v.Verify(t.Context(), rotated)
	require.NoError(t, err, "a new kid is fetched once the cooldown allows")
	assert.Equal(t, 2, s.JWKSCalls(), "exactly one refetch")
	rotatedEC := mint(t, s, "ES384", aud)
	_, err = v.Verify(t.Context(), rotatedEC)
	require.NoError(t, err)
	assert.Equal(t, 2, s.JWKSCalls(), "the refetch brought every new key")

	s.SetJWKSStatus(http.StatusServiceUnavailable)
	clock.Advance(DefaultRefreshInterval + time.Minute)
	// Re-mint at the new time: the old tokens have expired by now.
	for _, alg := range []string{"RS256", "ES384"} {
		_, err = v.Verify(t.Context(), mint(t, s, alg, aud))
		require.NoError(t, err, "known keys keep verifying while the JWKS endpoint is down")
		v.fetching.Wait()
	}
	assert.Equal(t, 3, s.JWKSCalls(), "one failed background refresh")
	s.Rotate()
	next := mint(t, s, "RS256", aud)
	_, err = v.Verify(t.Context(), next)
	assert.ErrorIs(t, err, ErrUnknownKey, "a new kid inside the cooldown fails at once")
	clock.Advance(DefaultRefetchCooldown)
	_, err = v.Verify(t.Context(), next)
	assert.ErrorIs(t, err, ErrKeysUnavailable, "a new kid while the JWKS endpoint is down cannot be checked")
	assert.Equal(t, 3, s.JWKSCalls(), "after a failure the refetch rediscovers first, and discovery is down too")

	s.Reset() // the JWKS endpoint is back
	clock.Advance(DefaultRefetchCooldown)
	_, err = v.Verify(t.Context(), next)
	assert.NoError(t, err, "a kid a failed fetch could not check is not negative-cached")
	assert.Equal(t, 4, s.JWKSCalls())
}

// TestProbedKidDoesNotBlockRotation: AWS key ids are predictable, so an
// attacker can send a forged token naming the trusted issuer and the next
// kid (RSA_1) before the issuer rotates to it. The refetch it causes finds
// nothing; once the issuer rotates, the first real token signed with RSA_1
// after the cooldown must refetch and verify, not be refused because the
// probe was seen.
func TestProbedKidDoesNotBlockRotation(t *testing.T) {
	t.Parallel()
	clock := newClock()
	s := startSTS(t, clock, nil)
	v := newTestVerifier(t, clock, Config{Issuers: []Issuer{{URL: s.URL, Account: ststest.DefaultAccountID}}, Audiences: []string{aud}})
	require.NoError(t, v.Prime(t.Context()))
	require.Equal(t, 1, s.JWKSCalls())

	probe := func() string {
		c := claimsFor(s.URL, clock.Now(), aud)
		c[AWSNamespace].(map[string]any)["aws_account"] = ststest.DefaultAccountID
		return sign(t, getTestKeys().rsa, jose.RS256, "RSA_1", c, nil) // not the issuer's key
	}
	clock.Advance(DefaultRefetchCooldown)
	_, err := v.Verify(t.Context(), probe())
	require.ErrorIs(t, err, ErrUnknownKey)
	require.Equal(t, 2, s.JWKSCalls(), "the probe refetched once and found no RSA_1")
	for range 100 {
		_, err = v.Verify(t.Context(), probe())
		require.ErrorIs(t, err, ErrUnknownKey)
	}
	require.Equal(t, 2, s.JWKSCalls(), "more probes inside the cooldown fetch nothing")

	s.Rotate()
	real := mint(t, s, "RS256", aud)
	jws, err := jose.ParseSignedCompact(real, signingAlgorithms)
	require.NoError(t, err)
	require.Equal(t, "RSA_1", jws.Signatures[0].Header.KeyID, "the emulator signs with RSA_1 now")
	clock.Advance(DefaultRefetchCooldown)
	_, err = v.Verify(t.Context(), real)
	require.NoError(t, err, "the first real token after the cooldown refetches, whatever the probe left behind")
	assert.Equal(t, 3, s.JWKSCalls())
	_, err = v.Verify(t.Context(), probe())
	assert.ErrorIs(t, err, ErrSignature, "the probe's kid is published now, and its signature is checked")
}

// A kid no issuer would publish, tens of kilobytes long, is refused without
// a fetch and stays out of error messages.
func TestOversizedKidIsRefusedUpFront(t *testing.T) {
	t.Parallel()
	clock := newClock()
	ti := newTestIssuer(t)
	v := newTestVerifier(t, clock, Config{Issuers: []Issuer{{URL: ti.URL}}, Audiences: []string{aud}})
	require.NoError(t, v.Prime(t.Context()))
	clock.Advance(DefaultRefetchCooldown)
	kid := strings.Repeat("k", 40<<10)
	_, err := v.Verify(t.Context(), sign(t, ti.keys.rsa, jose.RS256, kid, claimsFor(ti.URL, clock.Now(), aud), nil))
	require.ErrorIs(t, err, ErrUnknownKey)
	assert.Less(t, len(err.Error()), 500, "the kid is not copied into the error")
	assert.Len(t, ti.fetches(), 1, "no refetch for it")
}

// TestUnknownKidCooldown: an unknown kid refetches once per cooldown,
// the same kid again as much as another one (there is no negative cache to
// skip it), and fails at once inside the cooldown.
func TestUnknownKidCooldown(t *testing.T) {
	t.Parallel()
	clock := newClock()
	ti := newTestIssuer(t)
	v := newTestVerifier(t, clock, Config{Issuers: []Issuer{{URL: ti.URL}}, Audiences: []string{aud}})
	require.NoError(t, v.Prime(t.Context()))
	tok := func(kid string) string {
		return sign(t, ti.keys.rsa, jose.RS256, kid, claimsFor(ti.URL, clock.Now(), aud), nil)
	}
	_, err := v.Verify(t.Context(), tok("nope"))
	assert.ErrorIs(t, err, ErrUnknownKey)
	assert.Len(t, ti.fetches(), 1, "inside the cooldown after Prime: no fetch")

	clock.Advance(DefaultRefetchCooldown)
	_, err = v.Verify(t.Context(), tok("nope"))
	assert.ErrorIs(t, err, ErrUnknownKey)
	assert.Len(t, ti.fetches(), 2, "after the cooldown: one refetch")
	_, err = v.Verify(t.Context(), tok("other"))
	assert.ErrorIs(t, err, ErrUnknownKey)
	assert.Len(t, ti.fetches(), 2, "another unknown kid inside the cooldown: no fetch")

	clock.Advance(DefaultRefetchCooldown - time.Nanosecond)
	_, err = v.Verify(t.Context(), tok("nope"))
	assert.ErrorIs(t, err, ErrUnknownKey)
	assert.Len(t, ti.fetches(), 2, "still inside the cooldown")
	clock.Advance(time.Nanosecond)
	_, err = v.Verify(t.Context(), tok("nope"))
	assert.ErrorIs(t, err, ErrUnknownKey)
	assert.Len(t, ti.fetches(), 3, "the same kid refetches after the next cooldown")
}

// TestUnknownKidStorm: 10 000 requests with random unknown kids over 5 s of
// (fake) time cause at most one JWKS fetch per cooldown per issuer, and no
// request waits for a fetch except those that arrive while it runs.
func TestUnknownKidStorm(t *testing.T) {
	t.Parallel()
	clock := newClock()
	a, b := startSTS(t, clock, nil), startSTS(t, clock, nil)
	v := newTestVerifier(t, clock, Config{Issuers: []Issuer{{URL: a.URL}, {URL: b.URL}}, Audiences: []string{aud}})
	require.NoError(t, v.Prime(t.Context()))
	ka := getTestKeys().ec
	claimsA, claimsB := claimsFor(a.URL, clock.Now(), aud), claimsFor(b.URL, clock.Now(), aud)
	// The tokens are signed ahead: the storm measures the verifier.
	const n, workers = 10_000, 4
	toks := make([]string, 200)
	for i := range toks {
		c := claimsA
		if i%2 == 1 {
			c = claimsB
		}
		toks[i] = sign(t, ka, jose.ES384, "kid-"+time.Duration(i).String(), c, nil)
	}

	// storm sends the requests from several goroutines and returns how
	// long each took, in wall-clock time, sorted.
	storm := func() []time.Duration {
		lat := make([]time.Duration, n)
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for i := w; i < n; i += workers {
					clock.Advance(5 * time.Second / n) // 10 000 requests over 5 s
					t0 := time.Now()
					_, err := v.Verify(context.Background(), toks[i%len(toks)])
					lat[i] = time.Since(t0)
					if !errors.Is(err, ErrUnknownKey) {
						t.Errorf("Verify = %v, want ErrUnknownKey", err)
						return
					}
				}
			})
		}
		wg.Wait()
		slices.Sort(lat)
		return lat
	}

	clock.Advance(DefaultRefetchCooldown) // an unknown kid may refetch now
	waits := v.waits.Load()
	lat := storm()
	v.fetching.Wait()
	assert.Equal(t, 2, a.JWKSCalls(), "one refetch in the cooldown, however many unknown kids")
	assert.Equal(t, 2, b.JWKSCalls(), "one refetch in the cooldown, however many unknown kids")
	// Only requests that arrived while a refetch ran waited, for it; every
	// other one failed at once. (Wall-clock times are logged, not asserted:
	// under -race on a shared machine they measure the scheduler.)
	waited := v.waits.Load() - waits
	assert.Less(t, waited, int64(n/10), "requests that waited for a refetch")
	t.Logf("%d requests: median %s, p99 %s, p99.9 %s, slowest %s; %d waited for one of the 2 refetches",
		n, lat[n/2], lat[n*99/100], lat[n*999/1000], lat[n-1], waited)
}

func TestDocumentLimits(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		setup func(ti *testIssuer)
		want  string
	}{
		{"JWKS too large", func(ti *testIssuer) {
			ti.jwks = []byte(`{"keys":[],"pad":"` + strings.Repeat("x", MaxDocumentSize) + `"}`)
		}, "larger than"},
		{"jwks_uri on another origin", func(ti *testIssuer) {
			ti.discovery = []byte(`{"issuer":"` + ti.URL + `","jwks_uri":"http://127.0.0.2:1/keys"}`)
		}, "not on the issuer's origin"},
		{"jwks_uri with user info", func(ti *testIssuer) {
			ti.discovery = []byte(`{"issuer":"` + ti.URL + `","jwks_uri":"` + strings.Replace(ti.URL, "://", "://u:p@", 1) + `/keys"}`)
		}, "not on the issuer's origin"},
		{"discovery for another issuer", func(ti *testIssuer) {
			ti.discovery = []byte(`{"issuer":"https://evil.example.com","jwks_uri":"` + ti.URL + `/keys"}`)
		}, "discovery names issuer"},
		{"no usable key", func(ti *testIssuer) {
			ti.jwks = []byte(`{"keys":[{"kty":"oct","kid":"h","k":"c2VjcmV0"},{"kty":"EC","kid":"p256","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}`)
		}, "no usable"},
		{"JWKS error status", func(ti *testIssuer) { ti.status = http.StatusNotFound }, "status 404"},
		{"not JSON", func(ti *testIssuer) { ti.jwks = []byte("<html>") }, "not a JWKS"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			clock := newClock()
			ti := newTestIssuer(t)
			ti.set(tc.setup)
			v := newTestVerifier(t, clock, Config{Issuers: []Issuer{{URL: ti.URL}}, Audiences: []string{aud}})
			err := v.Prime(t.Context())
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			_, err = v.Verify(t.Context(), sign(t, ti.keys.rsa, jose.RS256, "rsa-1", claimsFor(ti.URL, clock.Now(), aud), nil))
			assert.ErrorIs(t, err, ErrKeysUnavailable)
		})
	}
}

func TestNoRedirects(t *testing.T) {
	t.Parallel()
	clock := newClock()
	ti := newTestIssuer(t)
	target := newTestIssuer(t)
	ti.set(func(ti *testIssuer) { ti.status = 0 })
	redirect := startRedirect(t, target.URL)
	_ = ti
	v := newTestVerifier(t, clock, Config{Issuers: []Issuer{{URL: redirect}}, Audiences: []string{aud}})
	err := v.Prime(t.Context())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "redirects are not followed")
	assert.Empty(t, target.fetches())
}

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	ok := Issuer{URL: "https://0000.tokens.sts.global.api.aws"}
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no issuers", Config{Audiences: []string{aud}}, "Config.Issuers is empty"},
		{"no audiences", Config{Issuers: []Issuer{ok}}, "Config.Audiences is empty"},
		{"empty audience", Config{Issuers: []Issuer{ok}, Audiences: []string{""}}, "empty audience"},
		{"http issuer", Config{Issuers: []Issuer{{URL: "http://example.com"}}, Audiences: []string{aud}}, "must be https"},
		{"loopback http without the switch", Config{Issuers: []Issuer{{URL: "http://127.0.0.1:8080"}}, Audiences: []string{aud}}, "AllowInsecureLoopbackIssuers"},
		{"http lookalike of loopback", Config{Issuers: []Issuer{{URL: "http://127.0.0.1.example.com"}}, Audiences: []string{aud}, AllowInsecureLoopbackIssuers: true}, "must be https"},
		// Go's resolver sends "localhost." to DNS, which may answer with any address.
		{"http localhost with a trailing dot", Config{Issuers: []Issuer{{URL: "http://localhost.:8080"}}, Audiences: []string{aud}, AllowInsecureLoopbackIssuers: true}, "must be https"},
		{"trailing slash", Config{Issuers: []Issuer{{URL: ok.URL + "/"}}, Audiences: []string{aud}}, "must not end in a slash"},
		{"query", Config{Issuers: []Issuer{{URL: ok.URL + "?a=b"}}, Audiences: []string{aud}}, "no user info, query or fragment"},
		{"relative", Config{Issuers: []Issuer{{URL: "tokens.sts.global.api.aws"}}, Audiences: []string{aud}}, "not an absolute URL"},
		{"duplicate", Config{Issuers: []Issuer{ok, ok}, Audiences: []string{aud}}, "listed twice"},
		{"bad account", Config{Issuers: []Issuer{{URL: ok.URL, Account: "12345"}}, Audiences: []string{aud}}, "12-digit"},
		{"leeway too large", Config{Issuers: []Issuer{ok}, Audiences: []string{aud}, Leeway: time.Hour}, "Config.Leeway 1h0m0s is out of range, 0 to 5m0s"},
		{"lifetime too long", Config{Issuers: []Issuer{ok}, Audiences: []string{aud}, MaxLifetime: 2 * time.Hour}, "Config.MaxLifetime 2h0m0s is out of range, 1m to 1h"},
		{"negative timeout", Config{Issuers: []Issuer{ok}, Audiences: []string{aud}, FetchTimeout: -1}, "Config.FetchTimeout"},
		{"negative cooldown", Config{Issuers: []Issuer{ok}, Audiences: []string{aud}, RefetchCooldown: -1}, "Config.RefetchCooldown"},
		{"negative replay size", Config{Issuers: []Issuer{ok}, Audiences: []string{aud}, ReplayCacheSize: -1}, "Config.ReplayCacheSize"},
		{"empty OU prefix", Config{Issuers: []Issuer{ok}, Audiences: []string{aud}, Policy: Policy{OUPathPrefixes: []string{""}}}, "OUPathPrefixes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v, err := New(tc.cfg)
			assert.Nil(t, v)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.True(t, strings.HasPrefix(err.Error(), "verify: "), err.Error())
		})
	}
	_, err := New(Config{Issuers: []Issuer{ok}, SkipAudienceCheck: true})
	assert.NoError(t, err, "SkipAudienceCheck needs no audiences")
	_, err = New(Config{Issuers: []Issuer{{URL: "http://[::1]:9"}, {URL: "http://localhost:9"}}, Audiences: []string{aud}, AllowInsecureLoopbackIssuers: true})
	assert.NoError(t, err)
}

func TestSkipAudienceCheck(t *testing.T) {
	t.Parallel()
	clock := newClock()
	s := startSTS(t, clock, nil)
	v := newTestVerifier(t, clock, Config{Issuers: []Issuer{{URL: s.URL}}, SkipAudienceCheck: true})
	c, err := v.Verify(t.Context(), mint(t, s, "RS256", "anything"))
	require.NoError(t, err)
	assert.Equal(t, []string{"anything"}, c.Audience)
}
