package verify

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/stsauth/stsauth/ststest"
)

// TestMain fails the run if any test leaks a goroutine, such as a fetch
// left running.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// start is the fake time every test begins at.
var start = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

// fakeClock is a clock a test advances by hand, shared by the verifier and
// the emulator. It is safe for concurrent use.
type fakeClock struct{ ns atomic.Int64 }

func newClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(start.UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// startSTS starts an emulator on clock after configure (which may be nil)
// has set its fields, and closes it when the test ends.
func startSTS(t testing.TB, clock *fakeClock, configure func(*ststest.Server)) *ststest.Server {
	t.Helper()
	s := ststest.NewUnstartedServer()
	s.Now = clock.Now
	if configure != nil {
		configure(s)
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

// mint gets a token for aud signed with alg from s.
func mint(t testing.TB, s *ststest.Server, alg string, aud ...string) string {
	t.Helper()
	out, err := s.Client().GetWebIdentityToken(t.Context(), &sts.GetWebIdentityTokenInput{
		Audience:         aud,
		SigningAlgorithm: aws.String(alg),
	})
	require.NoError(t, err)
	return aws.ToString(out.WebIdentityToken)
}

// newTestVerifier returns a verifier for cfg on clock that trusts loopback
// issuers and logs nowhere. The test's end waits for its fetches.
func newTestVerifier(t testing.TB, clock *fakeClock, cfg Config) *Verifier {
	t.Helper()
	cfg.AllowInsecureLoopbackIssuers = true
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	v, err := New(cfg)
	require.NoError(t, err)
	v.now = clock.Now
	t.Cleanup(v.fetching.Wait)
	return v
}

// testKeys are keys the tests sign with themselves, generated once: RSA
// key generation is slow under the race detector.
type testKeys struct {
	rsa *rsa.PrivateKey
	ec  *ecdsa.PrivateKey
}

var getTestKeys = sync.OnceValue(func() testKeys {
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return testKeys{rsa: rk, ec: ek}
})

// testIssuer is an OIDC issuer a test controls: it serves discovery and a
// JWKS of the test keys (kids "rsa-1" and "ec-1"), records the headers of
// JWKS requests, and can fail, delay or replace its answers.
type testIssuer struct {
	URL  string
	keys testKeys
	srv  *httptest.Server

	mu           sync.Mutex // guards the fields below
	jwks         []byte
	discovery    []byte // if set, replaces the discovery document
	cacheControl string
	status       int           // if non-zero, JWKS answers with it
	hold         chan struct{} // if non-nil, JWKS requests wait for it to close
	jwksHeaders  []http.Header
	fetched      chan struct{} // if non-nil, gets a value when a JWKS request arrives
}

func newTestIssuer(t testing.TB) *testIssuer {
	t.Helper()
	ti := &testIssuer{keys: getTestKeys()}
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		{Key: &ti.keys.rsa.PublicKey, KeyID: "rsa-1", Use: "sig"},
		{Key: &ti.keys.ec.PublicKey, KeyID: "ec-1", Algorithm: "ES384", Use: "sig"},
	}}
	var err error
	ti.jwks, err = json.Marshal(set)
	require.NoError(t, err)
	ti.srv = httptest.NewServer(http.HandlerFunc(ti.serve))
	t.Cleanup(ti.srv.Close)
	ti.URL = ti.srv.URL
	return ti
}

func (ti *testIssuer) serve(w http.ResponseWriter, r *http.Request) {
	ti.mu.Lock()
	switch r.URL.Path {
	case discoveryPath:
		doc := ti.discovery
		ti.mu.Unlock()
		if doc == nil {
			doc, _ = json.Marshal(map[string]string{"issuer": ti.URL, "jwks_uri": ti.URL + "/keys"})
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(doc)
	case "/keys":
		ti.jwksHeaders = append(ti.jwksHeaders, r.Header.Clone())
		doc, status, cc, hold, fetched := ti.jwks, ti.status, ti.cacheControl, ti.hold, ti.fetched
		ti.mu.Unlock()
		if fetched != nil {
			fetched <- struct{}{}
		}
		if hold != nil {
			select {
			case <-hold:
			case <-r.Context().Done():
				return
			}
		}
		if status != 0 {
			w.WriteHeader(status)
			return
		}
		if cc != "" {
			w.Header().Set("Cache-Control", cc)
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(doc)
	default:
		ti.mu.Unlock()
		http.NotFound(w, r)
	}
}

// set changes the issuer's behaviour under its lock.
func (ti *testIssuer) set(f func(ti *testIssuer)) {
	ti.mu.Lock()
	defer ti.mu.Unlock()
	f(ti)
}

// fetches returns the headers of each JWKS request so far.
func (ti *testIssuer) fetches() []http.Header {
	ti.mu.Lock()
	defer ti.mu.Unlock()
	return append([]http.Header(nil), ti.jwksHeaders...)
}

// claimsFor returns a valid claims set from iss at now, for aud.
func claimsFor(iss string, now time.Time, aud any) map[string]any {
	return map[string]any{
		"iss": iss,
		"sub": "arn:aws:iam::123456789012:role/caller",
		"aud": aud,
		"iat": now.Unix(),
		"exp": now.Add(5 * time.Minute).Unix(),
		"jti": "jti-" + now.Format(time.RFC3339Nano),
		AWSNamespace: map[string]any{
			"aws_account":   "123456789012",
			"source_region": "us-east-1",
			"org_id":        "o-a1b2c3d4e5",
			"ou_path":       []string{"o-a1b2c3d4e5/r-ab12/ou-ab12-11111111/"},
			"principal_id":  "arn:aws:iam::123456789012:role/caller",
		},
	}
}

// sign returns claims signed with key under alg, with kid and any extra
// header fields.
func sign(t testing.TB, key any, alg jose.SignatureAlgorithm, kid string, claims any, extra map[jose.HeaderKey]any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if kid != "" {
		opts = opts.WithHeader("kid", kid)
	}
	for k, v := range extra {
		if k == "jwk" {
			opts.EmbedJWK = true
			continue
		}
		opts = opts.WithHeader(k, v)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	require.NoError(t, err)
	payload, err := json.Marshal(claims)
	require.NoError(t, err)
	jws, err := signer.Sign(payload)
	require.NoError(t, err)
	out, err := jws.CompactSerialize()
	require.NoError(t, err)
	return out
}

// startRedirect starts a server that redirects every request to target
// with the same path, and returns its URL.
func startRedirect(t testing.TB, target string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target+r.URL.Path, http.StatusFound)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}
