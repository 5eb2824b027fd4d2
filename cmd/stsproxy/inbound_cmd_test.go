package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/aws-sdk-go-v2/service/sts/types"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/stsauth/stsauth/ststest"
	"go.uber.org/goleak"
)

// inboundAud is the audience the inbound tests' tokens are for.
const inboundAud = "https://api.example.com"

// testClock is a clock the inbound tests advance by hand, shared by the
// emulator (which mints with it) and the verifier. It is safe for
// concurrent use.
type testClock struct{ ns atomic.Int64 }

func newTestClock() *testClock {
	c := &testClock{}
	c.ns.Store(time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *testClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *testClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// checkNoLeaks fails the test if a goroutine it started outlives it and
// its cleanups.
func checkNoLeaks(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

// newClockedSTS starts an emulator minting on clock, after configure (which
// may be nil) set its fields.
func newClockedSTS(t *testing.T, clock *testClock, configure func(*ststest.Server)) *ststest.Server {
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

// mintToken gets a token for aud from s, with the request tags.
func mintToken(t testing.TB, s *ststest.Server, alg string, tags map[string]string, aud ...string) string {
	t.Helper()
	in := &sts.GetWebIdentityTokenInput{Audience: aud, SigningAlgorithm: aws.String(alg)}
	for k, v := range tags {
		in.Tags = append(in.Tags, types.Tag{Key: aws.String(k), Value: aws.String(v)})
	}
	out, err := s.Client().GetWebIdentityToken(t.Context(), in)
	require.NoError(t, err)
	return aws.ToString(out.WebIdentityToken)
}

// runningInbound is a stsproxy inbound run in-process by startInbound.
type runningInbound struct {
	addr, metricsAddr string
	logs              *syncBuffer
	stop              func() error
}

// startInbound runs stsproxy inbound in-process with args (listening on
// loopback) and the verifier on clock, and waits until it is ready: every
// issuer's keys are in. It stops at the test's end.
func startInbound(t *testing.T, clock *testClock, args ...string) *runningInbound {
	t.Helper()
	ri := startInboundUnready(t, clock, args...)
	select {
	case <-ri.ready:
	case err := <-ri.done:
		t.Fatalf("stsproxy inbound returned %v before ready; logs:\n%s", err, ri.logs.String())
	case <-time.After(waitTimeout):
		t.Fatalf("stsproxy inbound not ready; logs:\n%s", ri.logs.String())
	}
	return &ri.runningInbound
}

// unreadyInbound is a stsproxy inbound that may not be ready yet.
type unreadyInbound struct {
	runningInbound
	ready chan struct{} // closed when it is ready
	done  chan error    // receives serveInbound's result
}

// startInboundUnready runs stsproxy inbound as startInbound does, but waits
// only until it listens.
func startInboundUnready(t *testing.T, clock *testClock, args ...string) *unreadyInbound {
	t.Helper()
	args = append([]string{"--listen-addr", "127.0.0.1:0", "--metrics-listen-addr", "127.0.0.1:0", "--allow-insecure-issuer", "--log-level", "debug"}, args...)
	cfg, err := parseCommandConfig(inboundCommand, args, envOf(nil))
	require.NoError(t, err)
	cfg.inbound.now = clock.Now
	ri := &unreadyInbound{runningInbound: runningInbound{logs: &syncBuffer{}}, ready: make(chan struct{}), done: make(chan error, 1)}
	cfg.onReady = func(string, string) { close(ri.ready) }
	ctx, cancel := context.WithCancel(context.Background())
	go func() { ri.done <- serveInbound(ctx, cfg, newLogger(cfg, ri.logs)) }()
	var once sync.Once
	var result error
	ri.stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case result = <-ri.done:
			case <-time.After(waitTimeout):
				result = fmt.Errorf("stsproxy inbound did not stop")
			}
		})
		return result
	}
	t.Cleanup(func() { _ = ri.stop() })
	deadline := time.Now().Add(waitTimeout)
	for {
		if a, m, ok := listeningAddrs(ri.logs.String()); ok {
			ri.addr, ri.metricsAddr = a, m
			return ri
		}
		if time.Now().After(deadline) {
			t.Fatalf("stsproxy inbound did not listen; logs:\n%s", ri.logs.String())
		}
		time.Sleep(5 * time.Millisecond) // poll interval, bounded by the deadline
	}
}

// send sends a GET to the inbound proxy with the bearer token (none if
// empty) and the extra headers, and returns the response with its body read.
func (ri *runningInbound) send(t *testing.T, c *http.Client, token string, hdr http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+ri.addr+"/orders?id=7", nil)
	require.NoError(t, err)
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := c.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res, string(body)
}

// forgeToken signs claims with a key of its own under kid: a token the
// issuer never minted.
func forgeToken(t *testing.T, key *ecdsa.PrivateKey, kid string, claims any) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES384, Key: key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid))
	require.NoError(t, err)
	tok, err := jwt.Signed(signer).Claims(claims).Serialize()
	require.NoError(t, err)
	return tok
}

// awsClaimsFor returns claims as the emulator s mints them, at now.
func awsClaimsFor(s *ststest.Server, now time.Time) map[string]any {
	return map[string]any{
		"iss": s.Issuer(), "sub": "arn:aws:iam::123456789012:role/ststest", "aud": inboundAud,
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "jti": "forged",
		"https://sts.amazonaws.com/": map[string]any{"aws_account": "123456789012", "principal_id": "arn:aws:iam::123456789012:role/ststest"},
	}
}

// TestInboundE2E drives stsproxy inbound against ststest: the upstream sees
// exactly the verified identity, and no refused request reaches it.
func TestInboundE2E(t *testing.T) {
	checkNoLeaks(t)
	clock := newTestClock()
	sts := newClockedSTS(t, clock, func(s *ststest.Server) {
		s.OUPath = []string{"o-ststest000/r-st00/ou-st00-aaaaaaaa/", "o-ststest000/r-st00/ou-st00-bbbbbbbb/"}
	})
	other := newClockedSTS(t, clock, func(s *ststest.Server) { s.AccountID = "111111111111" })
	up := newRecordingUpstream(t, nil)
	ri := startInbound(t, clock, "--upstream", up.URL,
		"--issuer", sts.Issuer(), "--issuer", other.Issuer(),
		// The second issuer is bound to an account its tokens do not carry.
		"--account", "123456789012", "--account", "222222222222",
		"--audience", inboundAud, "--require-tag", "team=payments")
	c := testClient(t)
	tags := map[string]string{"team": "payments", "env": "prod, eu=1%"}
	good := mintToken(t, sts, "ES384", tags, inboundAud)

	t.Run("good token: the upstream sees the identity", func(t *testing.T) {
		res, body := ri.send(t, c, good, http.Header{
			"X-Aws-Account":      {"999999999999"},
			"x-aws-principal-id": {"arn:aws:iam::999999999999:root"},
			"X-Aws-Anything":     {"spoofed"},
			"X-Forwarded-For":    {"10.0.0.1"},
		})
		require.Equal(t, http.StatusOK, res.StatusCode, body)
		r, hits := up.lastRequest()
		require.Equal(t, 1, hits)
		h := r.Header
		assert.Equal(t, []string{"123456789012"}, h.Values("X-Aws-Account"), "only the verified account")
		assert.Equal(t, []string{"arn:aws:iam::123456789012:role/ststest"}, h.Values("X-Aws-Principal-Id"))
		assert.Equal(t, "arn:aws:iam::123456789012:role/ststest", h.Get("X-Aws-Subject"))
		assert.Equal(t, sts.Issuer(), h.Get("X-Aws-Issuer"))
		assert.Equal(t, ststest.DefaultOrgID, h.Get("X-Aws-Org-Id"))
		assert.Equal(t, []string{"o-ststest000/r-st00/ou-st00-aaaaaaaa/", "o-ststest000/r-st00/ou-st00-bbbbbbbb/"}, h.Values("X-Aws-Ou-Path"))
		assert.Equal(t, ststest.DefaultRegion, h.Get("X-Aws-Source-Region"))
		assert.Len(t, h.Get("X-Aws-Token-Id"), 36, "the jti, a UUID")
		exp, err := time.Parse(time.RFC3339, h.Get("X-Aws-Token-Expiry"))
		require.NoError(t, err)
		assert.True(t, exp.After(clock.Now()), "expiry %v", exp)
		assert.Equal(t, []string{"env=prod%2C%20eu%3D1%25", "team=payments"}, h.Values("X-Aws-Request-Tag"))
		assert.Empty(t, h.Get("X-Aws-Anything"), "every header of the prefix is removed")
		assert.Empty(t, h.Get("Authorization"), "the token is not forwarded")
		assert.Equal(t, "10.0.0.1, 127.0.0.1", h.Get("X-Forwarded-For"))
		assert.Equal(t, "/orders", r.URL.Path)
		assert.Equal(t, "id=7", r.URL.RawQuery)
		assert.Equal(t, ri.addr, r.Host, "the upstream sees the Host the client asked for")
		tag, err := url.PathUnescape(strings.TrimPrefix(h.Values("X-Aws-Request-Tag")[0], "env="))
		require.NoError(t, err)
		assert.Equal(t, "prod, eu=1%", tag, "an URL unescape restores the value")
	})

	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	require.NoError(t, err)
	expired := mintToken(t, sts, "RS256", tags, inboundAud)
	clock.Advance(2 * time.Hour) // expired is now an hour past its exp
	good = mintToken(t, sts, "ES384", tags, inboundAud)
	parts := strings.Split(good, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	require.NoError(t, err)
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(payload), "123456789012", "123456789013", 2))) + "." + parts[2]
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + parts[1] + "."
	noneKid := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","kid":"EC384_0"}`)) + "." + parts[1] + "."

	refusals := []struct {
		name, token, reason string
		status              int
	}{
		{"no token", "", "no_token", http.StatusUnauthorized},
		{"expired", expired, "expired", http.StatusUnauthorized},
		{"wrong audience", mintToken(t, sts, "RS256", tags, "https://other.example.com"), "audience", http.StatusUnauthorized},
		{"wrong account", mintToken(t, other, "RS256", tags, inboundAud), "account", http.StatusUnauthorized},
		{"tampered", tampered, "bad_signature", http.StatusUnauthorized},
		{"alg none", none, "algorithm", http.StatusUnauthorized},
		{"alg none with a kid", noneKid, "algorithm", http.StatusUnauthorized},
		{"forged with an unknown key", forgeToken(t, key, "EC384_0", awsClaimsFor(sts, clock.Now())), "bad_signature", http.StatusUnauthorized},
		{"untrusted issuer", mintToken(t, newClockedSTS(t, clock, nil), "RS256", tags, inboundAud), "untrusted_issuer", http.StatusUnauthorized},
		{"policy: missing tag", mintToken(t, sts, "RS256", nil, inboundAud), "policy", http.StatusForbidden},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			_, before := up.lastRequest()
			res, body := ri.send(t, c, tc.token, http.Header{"X-Aws-Account": {"123456789012"}})
			assert.Equal(t, tc.status, res.StatusCode)
			var got struct{ Reason string }
			require.NoError(t, json.Unmarshal([]byte(body), &got), body)
			assert.Equal(t, tc.reason, got.Reason)
			assert.Equal(t, "application/json", res.Header.Get("Content-Type"))
			wantAuthn := `Bearer error="invalid_token"`
			switch tc.status {
			case http.StatusForbidden:
				wantAuthn = `Bearer error="insufficient_scope"`
			case http.StatusUnauthorized:
				if tc.token == "" {
					wantAuthn = "Bearer"
				}
			}
			assert.True(t, strings.HasPrefix(res.Header.Get("WWW-Authenticate"), wantAuthn), res.Header.Get("WWW-Authenticate"))
			if tc.token != "" {
				assert.NotContains(t, body, tc.token[:30])
			}
			_, after := up.lastRequest()
			assert.Equal(t, before, after, "the upstream is never reached")
		})
	}

	t.Run("spoofed headers with a valid token", func(t *testing.T) {
		res, body := ri.send(t, c, good, http.Header{
			"X-Aws-Account": {"999999999999", "123456789012"},
			"X-AWS-ORG-ID":  {"o-spoofed000"},
		})
		require.Equal(t, http.StatusOK, res.StatusCode, body)
		r, _ := up.lastRequest()
		assert.Equal(t, []string{"123456789012"}, r.Header.Values("X-Aws-Account"))
		assert.Equal(t, []string{ststest.DefaultOrgID}, r.Header.Values("X-Aws-Org-Id"))
	})

	t.Run("metrics and access log", func(t *testing.T) {
		res, err := c.Get("http://" + ri.metricsAddr + "/metrics")
		require.NoError(t, err)
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		require.NoError(t, err)
		m := string(b)
		assert.Contains(t, m, `reason="expired",result="refused"} 1`)
		assert.Contains(t, m, `reason="none",result="allowed"} 2`)
		assert.Contains(t, m, `verify_jwks_fetch_count_total{issuer="`+sts.Issuer()+`"`)
		assert.Contains(t, m, `http_client_request_duration_seconds_count{`)
		// The access log is written by a goroutine of its own: wait for
		// the records of the requests above.
		deadline := time.Now().Add(waitTimeout)
		for !strings.Contains(ri.logs.String(), `"auth":"policy"`) && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond) // poll interval, bounded by the deadline
		}
		logs := ri.logs.String()
		assert.Contains(t, logs, `"auth":"expired"`)
		assert.Contains(t, logs, `"principal":"arn:aws:iam::123456789012:role/ststest"`)
		for _, tok := range []string{good, expired, tampered} {
			assert.NotContains(t, logs, tok[len(tok)-20:], "no token in the logs")
		}
	})
	require.NoError(t, ri.stop())
}

// TestInboundKeys: known keys keep working while the JWKS is down, and a
// storm of unknown kids costs one fetch per cooldown.
func TestInboundKeys(t *testing.T) {
	checkNoLeaks(t)
	clock := newTestClock()
	sts := newClockedSTS(t, clock, nil)
	up := newRecordingUpstream(t, nil)
	ri := startInbound(t, clock, "--upstream", up.URL, "--issuer", sts.Issuer(), "--audience", inboundAud)
	c := testClient(t)
	ok := func(t *testing.T) {
		t.Helper()
		res, body := ri.send(t, c, mintToken(t, sts, "RS256", nil, inboundAud), nil)
		assert.Equal(t, http.StatusOK, res.StatusCode, body)
	}
	ok(t)

	t.Run("unknown-kid storm", func(t *testing.T) {
		key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		require.NoError(t, err)
		storm := func(kid string) int {
			before := sts.JWKSCalls()
			tok := forgeToken(t, key, kid, awsClaimsFor(sts, clock.Now()))
			var wg sync.WaitGroup
			codes := make(chan int, 40)
			for range cap(codes) {
				wg.Go(func() {
					req, _ := http.NewRequest(http.MethodGet, "http://"+ri.addr+"/", nil)
					req.Header.Set("Authorization", "Bearer "+tok)
					res, err := c.Do(req)
					if err != nil {
						codes <- 0
						return
					}
					io.Copy(io.Discard, res.Body)
					res.Body.Close()
					codes <- res.StatusCode
				})
			}
			wg.Wait()
			close(codes)
			for code := range codes {
				assert.Equal(t, http.StatusUnauthorized, code)
			}
			return sts.JWKSCalls() - before
		}
		assert.Equal(t, 0, storm("EC384_7"), "inside the cooldown after start: no fetch")
		clock.Advance(31 * time.Second)
		assert.Equal(t, 1, storm("EC384_8"), "past the cooldown: one fetch for the whole storm")
		assert.Equal(t, 0, storm("EC384_9"), "a new kid inside the cooldown: no fetch")
		clock.Advance(31 * time.Second)
		assert.Equal(t, 1, storm("EC384_10"), "the next cooldown: one fetch")
		ok(t)
	})

	t.Run("JWKS down after warm-up", func(t *testing.T) {
		sts.SetJWKSStatus(http.StatusServiceUnavailable)
		before := sts.JWKSCalls()
		clock.Advance(2 * time.Hour) // past the refresh interval: a refresh fails
		ok(t)                        // starts a refresh in the background, which fails
		deadline := time.Now().Add(waitTimeout)
		for sts.JWKSCalls() == before && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond) // poll interval, bounded by the deadline
		}
		require.Greater(t, sts.JWKSCalls(), before, "a refresh was tried")
		ok(t)
		ok(t)
		res, err := c.Get("http://" + ri.metricsAddr + "/readyz")
		require.NoError(t, err)
		res.Body.Close()
		assert.Equal(t, http.StatusOK, res.StatusCode, "still ready on the keys it has")
	})
	_, hits := up.lastRequest()
	assert.Equal(t, 5, hits, "only the good tokens reached the upstream")
	require.NoError(t, ri.stop())
}

// TestInboundReadiness: /readyz answers 503 until every issuer's keys are
// in, and the upstream is never reached before.
func TestInboundReadiness(t *testing.T) {
	checkNoLeaks(t)
	clock := newTestClock()
	a := newClockedSTS(t, clock, nil)
	b := newClockedSTS(t, clock, nil)
	b.SetJWKSStatus(http.StatusServiceUnavailable)
	up := newRecordingUpstream(t, nil)
	ri := startInboundUnready(t, clock, "--upstream", up.URL, "--issuer", a.Issuer(), "--issuer", b.Issuer(), "--audience", inboundAud)
	c := testClient(t)
	readyz := func() int {
		res, err := c.Get("http://" + ri.metricsAddr + "/readyz")
		require.NoError(t, err)
		res.Body.Close()
		return res.StatusCode
	}
	// Wait for the first attempt to fail, so the keys come only from a
	// retry after the JWKS is back.
	deadline := time.Now().Add(waitTimeout)
	for !strings.Contains(ri.logs.String(), "fetching issuer keys failed; retrying") {
		require.True(t, time.Now().Before(deadline), "no failed fetch logged; logs:\n%s", ri.logs.String())
		time.Sleep(5 * time.Millisecond) // poll interval, bounded by the deadline
	}
	assert.Equal(t, http.StatusServiceUnavailable, readyz(), "not ready while an issuer's keys are missing")
	b.SetJWKSStatus(0)
	select {
	case <-ri.ready:
	case <-time.After(waitTimeout):
		t.Fatalf("not ready; logs:\n%s", ri.logs.String())
	}
	assert.Equal(t, http.StatusOK, readyz())
	res, body := ri.send(t, c, mintToken(t, b, "ES384", nil, inboundAud), nil)
	assert.Equal(t, http.StatusOK, res.StatusCode, body)
	require.NoError(t, ri.stop())
}

// TestInboundStreamsAndUpgrades: a streamed response arrives event by event
// and a protocol upgrade passes through, as with the outbound proxy; the
// token is forwarded only with --forward-token.
func TestInboundStreamsAndUpgrades(t *testing.T) {
	checkNoLeaks(t)
	clock := newTestClock()
	sts := newClockedSTS(t, clock, nil)
	release := make(chan struct{})
	up := newRecordingUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/sse":
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, "data: one\n\n")
			w.(http.Flusher).Flush()
			select {
			case <-release:
			case <-r.Context().Done():
			}
			fmt.Fprint(w, "data: two\n\n")
		case "/upgrade":
			serveTestUpgrade(w, r, func(line string) string { return r.Header.Get("X-Aws-Account") + " says " + line })
		default:
			fmt.Fprint(w, r.Header.Get("Authorization") != "")
		}
	})
	ri := startInbound(t, clock, "--upstream", up.URL, "--issuer", sts.Issuer(), "--audience", inboundAud, "--forward-token")
	c := testClient(t)
	tok := mintToken(t, sts, "RS256", nil, inboundAud)

	res, body := ri.send(t, c, tok, nil)
	assert.Equal(t, "true", body, "--forward-token keeps Authorization")
	assert.Equal(t, http.StatusOK, res.StatusCode)

	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+ri.addr+"/sse", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+tok)
	res, err = c.Do(req)
	require.NoError(t, err)
	br := bufio.NewReader(res.Body)
	line, err := br.ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "data: one\n", line, "the first event arrives before the response ends")
	close(release)
	rest, err := io.ReadAll(br)
	require.NoError(t, err)
	assert.Equal(t, "\ndata: two\n\n", string(rest))
	res.Body.Close()

	conn, err := net.Dial("tcp", ri.addr)
	require.NoError(t, err)
	defer conn.Close()
	fmt.Fprintf(conn, "GET /upgrade HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nX-Aws-Account: 999999999999\r\nConnection: Upgrade\r\nUpgrade: test-proto\r\n\r\n", tok)
	cr := bufio.NewReader(conn)
	res, err = http.ReadResponse(cr, nil)
	require.NoError(t, err)
	assert.Equal(t, http.StatusSwitchingProtocols, res.StatusCode)
	fmt.Fprint(conn, "hello\n")
	echo, err := cr.ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "123456789012 says hello\n", echo)
	conn.Close()
	require.NoError(t, ri.stop())
}

func TestInboundConfig(t *testing.T) {
	t.Parallel()
	const iss = "https://00000000-0000-0000-0000-000000000000.tokens.sts.global.api.aws"
	base := []string{"--upstream", "http://127.0.0.1:8080", "--issuer", iss, "--audience", inboundAud}
	t.Run("defaults", func(t *testing.T) {
		c, err := parseCommandConfig(inboundCommand, base, envOf(nil))
		require.NoError(t, err)
		assert.Equal(t, ":8443", c.listenAddr)
		assert.Equal(t, "X-Aws-", c.inbound.headers.prefix)
		assert.Equal(t, "X-Aws-Principal-Id", c.inbound.headers.principalID)
		assert.False(t, c.inbound.forwardToken)
		assert.Zero(t, c.inbound.verify.ReplayCacheSize)
	})
	t.Run("env and flag precedence, pairing", func(t *testing.T) {
		env := envOf(map[string]string{
			"UPSTREAM": "https://127.0.0.1:9000", "ISSUER": iss + ",https://1.tokens.sts.global.api.aws",
			"AUDIENCE": "a,b", "ACCOUNT": "111111111111,222222222222", "ALLOW_PRINCIPAL": "arn:aws:iam::111111111111:role/*",
			"CLAIM_HEADER_PREFIX": "x-caller-", "REPLAY_CACHE_SIZE": "100", "LISTEN_ADDR": ":1"})
		c, err := parseCommandConfig(inboundCommand, []string{"--listen-addr", ":2"}, env)
		require.NoError(t, err)
		assert.Equal(t, ":2", c.listenAddr)
		assert.Equal(t, "https://127.0.0.1:9000", c.inbound.upstream.String())
		assert.Equal(t, "111111111111", c.inbound.verify.Issuers[0].Account)
		assert.Equal(t, "222222222222", c.inbound.verify.Issuers[1].Account)
		assert.Equal(t, []string{"a", "b"}, c.inbound.verify.Audiences)
		assert.Equal(t, "X-Caller-Account", c.inbound.headers.account)
		assert.Equal(t, 100, c.inbound.verify.ReplayCacheSize)
	})
	bad := []struct {
		name string
		args []string
		want string
	}{
		{"no upstream", []string{"--issuer", iss, "--audience", "a"}, "missing --upstream/UPSTREAM"},
		{"no issuer", []string{"--upstream", "http://127.0.0.1:1", "--audience", "a"}, "missing --issuer/ISSUER"},
		{"no audience", []string{"--upstream", "http://127.0.0.1:1", "--issuer", iss}, "missing --audience/AUDIENCE"},
		{"upstream scheme", append(base, "--upstream", "ftp://127.0.0.1"), `invalid --upstream/UPSTREAM "ftp://127.0.0.1": want an http or https URL`},
		{"upstream metadata", append(base, "--upstream", "http://169.254.169.254"), "want a host other than a link-local"},
		{"upstream query", append(base, "--upstream", "http://127.0.0.1/?a=1"), "without user info, query or fragment"},
		{"http issuer", append(base, "--issuer", "http://127.0.0.1:1"), "needs --allow-insecure-issuer/ALLOW_INSECURE_ISSUER"},
		{"http remote issuer", append(base, "--issuer", "http://issuer.example", "--allow-insecure-issuer"), "want an https URL (http only on a loopback host"},
		{"issuer slash", append(base, "--issuer", iss+"/"), "without a trailing slash"},
		{"issuer twice", append(base, "--issuer", iss), "want each issuer once"},
		{"account digits", append(base, "--account", "12345"), `invalid --account/ACCOUNT "12345": want a 12-digit AWS account ID`},
		{"account count", append(base, "--account", "111111111111", "--account", "222222222222"), "want one account per --issuer/ISSUER (1), in the same order"},
		{"org", append(base, "--allow-org", "acme"), "want an AWS Organizations ID"},
		{"ou", append(base, "--allow-ou-prefix", "ou-1"), "want an OU path prefix"},
		{"principal", append(base, "--allow-principal", "role/x"), "want an ARN pattern starting with arn:"},
		{"tag", append(base, "--require-tag", "team"), `invalid --require-tag/REQUIRE_TAG "team": want key=value`},
		{"replay", append(base, "--replay-cache-size", "-1"), "want an integer from 0 (off) to 10000000"},
		{"prefix no dash", append(base, "--claim-header-prefix", "X-Aws"), "ending in -"},
		{"prefix catches a standard header", append(base, "--claim-header-prefix", "X-Forwarded-"), "it would remove X-Forwarded-For"},
		{"prefix catches Content-Type", append(base, "--claim-header-prefix", "Content-"), "it would remove Content-Length"},
		{"proxy flag", append(base, "--token-audience", "a"), "unknown flag --token-audience: stsproxy inbound does not take it"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseCommandConfig(inboundCommand, tc.args, envOf(nil))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	t.Run("exit 2 naming the flag", func(t *testing.T) {
		var stderr strings.Builder
		code := run(t.Context(), []string{"inbound", "--upstream", "http://127.0.0.1:1"}, envOf(nil), io.Discard, &stderr)
		assert.Equal(t, 2, code)
		assert.Contains(t, stderr.String(), "missing --issuer/ISSUER")
		assert.Contains(t, stderr.String(), "stsproxy inbound --help")
	})
	t.Run("--validate", func(t *testing.T) {
		var stdout, stderr strings.Builder
		code := run(t.Context(), append([]string{"inbound", "--validate"}, base...), envOf(nil), &stdout, &stderr)
		assert.Equal(t, 0, code, stderr.String())
		assert.Equal(t, "stsproxy inbound: configuration valid: upstream http://127.0.0.1:8080, 1 issuer(s), 1 audience(s)\n", stdout.String())
		code = run(t.Context(), []string{"inbound", "--validate", "--upstream", "http://127.0.0.1:8080"}, envOf(nil), &stdout, &stderr)
		assert.Equal(t, 2, code)
		c, err := parseCommandConfig(inboundCommand, base, envOf(map[string]string{"VALIDATE": "true"}))
		require.NoError(t, err)
		assert.False(t, c.inbound.validateOnly, "--validate has no env var")
	})
	t.Run("the proxy does not take inbound flags", func(t *testing.T) {
		_, err := parseConfig([]string{"--issuer", iss}, envOf(nil))
		require.Error(t, err)
		c, err := parseConfig(nil, envOf(map[string]string{"ISSUER": "not a url"}))
		require.NoError(t, err, "nor reads their env vars")
		assert.Nil(t, c.inbound)
	})
}

func TestEncodeHeaderValue(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"arn:aws:iam::123456789012:role/a+b.c@d_e-f", "arn:aws:iam::123456789012:role/a+b.c@d_e-f"},
		{"o-a/r-b/ou-c/", "o-a/r-b/ou-c/"},
		{"a b,c=d%e", "a%20b%2Cc%3Dd%25e"},
		{"Grüße\r\nX-Aws-Account: 1", "Gr%C3%BC%C3%9Fe%0D%0AX-Aws-Account:%201"},
		{"", ""},
	} {
		got := encodeHeaderValue(tc.in)
		assert.Equal(t, tc.want, got, tc.in)
		back, err := url.PathUnescape(got)
		require.NoError(t, err)
		assert.Equal(t, tc.in, back)
	}
	assert.Zero(t, testing.AllocsPerRun(100, func() { _ = encodeHeaderValue("arn:aws:iam::123456789012:role/ststest") }))
}

func TestRemovePrefixed(t *testing.T) {
	t.Parallel()
	h := http.Header{"X-Aws-Account": {"1"}, "x-aws-lower": {"2"}, "X-AWS-UPPER": {"3"}, "X-Awsome": {"4"}, "Accept": {"5"}}
	removePrefixed(h, "X-Aws-")
	assert.Equal(t, http.Header{"X-Awsome": {"4"}, "Accept": {"5"}}, h)
	removePrefixed(nil, "X-Aws-") // a request without trailers
}
