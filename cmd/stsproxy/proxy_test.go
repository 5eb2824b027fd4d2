package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/stsauth/stsauth"
	"go.opentelemetry.io/otel/metric/noop"
	"go.uber.org/goleak"
)

// TestBaseTransportRefusesMetadataAddrs dials through the base transport's
// dialer: its Control hook runs before connect, so no packet leaves.
func TestBaseTransportRefusesMetadataAddrs(t *testing.T) {
	t.Parallel()
	base := newBaseTransport(&config{upstreamTimeout: time.Second})
	for _, a := range []string{"169.254.169.254:80", "[fd00:ec2::23]:80"} {
		_, err := base.DialContext(context.Background(), "tcp", a)
		assert.ErrorIs(t, err, stsauth.ErrHostNotAllowed, a)
	}
}

// timeoutErr is a net.Error that reports a timeout, like the transport's
// response-header timeout.
type timeoutErr struct{}

func (timeoutErr) Error() string   { return "timeout awaiting response headers" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestErrorHandlerMapping(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		err    error
		status int
		body   string
	}{
		{"token", &stsauth.TokenError{Audience: stsauth.MustAudience("a"), Err: errors.New("AccessDenied")}, 502, "token unavailable\n"},
		{"wrapped token", errors.Join(errors.New("x"), &stsauth.TokenError{Err: errors.New("y")}), 502, "token unavailable\n"},
		{"host not allowed", stsauth.ErrHostNotAllowed, 403, "upstream host \"t.example\" is not allowed\n"},
		{"clear text", stsauth.ErrCleartext, 403, "refusing to send a token to upstream host \"t.example\" in clear text\n"},
		{"timeout", timeoutErr{}, 504, "gateway timeout\n"},
		{"deadline", context.DeadlineExceeded, 504, "gateway timeout\n"},
		{"refused", &net.OpError{Op: "dial", Err: errors.New("connection refused")}, 502, "bad gateway\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var logs bytes.Buffer
			p := newProxy(&config{}, http.DefaultTransport, slog.New(slog.NewJSONHandler(&logs, nil)), nil)
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r = r.WithContext(context.WithValue(r.Context(), stateKey{}, &requestState{target: "t.example"}))
			w := httptest.NewRecorder()
			p.errorHandler(w, r, tc.err)
			assert.Equal(t, tc.status, w.Code)
			assert.Equal(t, tc.body, w.Body.String())
			assert.NotEmpty(t, logs.String())
		})
	}
}

// startRun runs the whole program in-process and returns its listen
// addresses, a cancel func that stops it and a channel with its exit code.
func startRun(t *testing.T, args ...string) (addr, metricsAddr string, logs *syncBuffer, stop func() int) {
	t.Helper()
	logs = &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	codec := make(chan int, 1)
	args = append([]string{"--listen-addr", "127.0.0.1:0", "--metrics-listen-addr", "127.0.0.1:0", "--upstream-scheme", "http", "--local-sts"}, args...)
	go func() { codec <- run(ctx, args, envOf(nil), io.Discard, logs) }()
	stop = func() int {
		cancel()
		select {
		case code := <-codec:
			return code
		case <-time.After(waitTimeout):
			t.Fatal("run did not return")
			return -1
		}
	}
	deadline := time.Now().Add(waitTimeout)
	for {
		if a, m, ok := listeningAddrs(logs.String()); ok {
			return a, m, logs, stop
		}
		select {
		case code := <-codec:
			t.Fatalf("run returned %d before listening; logs:\n%s", code, logs.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("run did not log listening; logs:\n%s", logs.String())
		}
	}
}

// TestRunInProcess drives run with the in-process STS emulator through the
// routing modes, and checks nothing is left running afterwards.
func TestRunInProcess(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Host+" "+strings.Fields(r.Header.Get("Authorization") + " none")[0])
	}))
	defer up.Close()
	upHost := strings.TrimPrefix(up.URL, "http://")
	c := &http.Client{Timeout: waitTimeout, Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
	do := func(url, host string, hdr map[string]string) (int, string) { return getWithHost(t, c, url, host, hdr) }

	t.Run("allowlist", func(t *testing.T) {
		addr, _, logs, stop := startRun(t, "--allowed-hosts", upHost+",*.allowed.example", "--log-format", "json")
		status, body := do("http://"+addr+"/", "", map[string]string{"X-Upstream-Host": upHost})
		assert.Equal(t, http.StatusOK, status)
		assert.Equal(t, upHost+" Bearer", body)
		status, body = do("http://"+addr+"/", "", map[string]string{"X-Upstream-Host": "other.example"})
		assert.Equal(t, http.StatusForbidden, status)
		assert.Equal(t, "upstream host \"other.example\" is not allowed\n", body)
		assert.Equal(t, 0, stop())
		assert.Contains(t, logs.String(), "local development only")
		assert.NotContains(t, logs.String(), "clients can direct tokens to any host")
	})
	t.Run("pinned with static audience, metrics disabled", func(t *testing.T) {
		addr, metricsAddr, logs, stop := startRun(t, "--upstream-host", upHost, "--token-audience", "https://pinned.example", "--metrics-enabled=false")
		// No admin listener at all: nothing to poll, so wait for the log.
		assert.Empty(t, metricsAddr)
		deadline := time.Now().Add(waitTimeout)
		for !strings.Contains(logs.String(), `"msg":"token ready"`) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond) // poll interval, bounded by the deadline
		}
		assert.Contains(t, logs.String(), `"msg":"token ready"`)
		assert.Contains(t, logs.String(), `"signing_algorithm":"RS256","audience":"https://pinned.example"}`, "the startup log names the audience")
		status, body := do("http://"+addr+"/", "", map[string]string{"X-Upstream-Host": "ignored.example"})
		assert.Equal(t, http.StatusOK, status)
		assert.Equal(t, upHost+" Bearer", body)
		assert.Equal(t, 0, stop())
	})
	t.Run("metrics disabled binds no admin listener", func(t *testing.T) {
		// The default admin address is taken: with metrics disabled the
		// proxy must still start, since it binds nothing there.
		busy, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer busy.Close()
		addr, metricsAddr, logs, stop := startRun(t, "--upstream-host", upHost, "--metrics-listen-addr", busy.Addr().String(), "--metrics-enabled=false",
			"--token-duration", "2m")
		assert.Empty(t, metricsAddr)
		status, _ := do("http://"+addr+"/", "", nil)
		assert.Equal(t, http.StatusOK, status)
		// The effective skew of a short duration is logged at startup.
		assert.Contains(t, logs.String(), `"msg":"token settings","duration":"2m0s","refresh_skew":"1m0s"`)
		assert.Contains(t, logs.String(), `"audience":"http://127.0.0.1 (no --token-audience/TOKEN_AUDIENCE: derived from --upstream-host)"`)
		assert.Equal(t, 0, stop())
	})
	c.CloseIdleConnections()
}

// TestProxyRouteByHostLine uses the handler directly, with a fake token
// transport, for the --host-header Host mode.
func TestProxyRouteByHostLine(t *testing.T) {
	t.Parallel()
	cfg, err := parseConfig([]string{"--host-header", "Host", "--upstream-scheme", "http"}, envOf(nil))
	require.NoError(t, err)
	var gotURL string
	rt := roundTripperFunc(func(r *http.Request) (*http.Response, error) {
		gotURL = r.URL.String()
		return &http.Response{StatusCode: 204, Body: http.NoBody, Header: http.Header{}, Request: r}, nil
	})
	pm, err := newProxyMetrics(noop.NewMeterProvider())
	require.NoError(t, err)
	p := newProxy(cfg, rt, slog.New(slog.DiscardHandler), pm)

	r := httptest.NewRequest(http.MethodGet, "http://target.example:8080/p?q=1", nil)
	w := httptest.NewRecorder()
	p.ServeHTTP(w, r)
	assert.Equal(t, http.StatusNoContent, w.Code)
	assert.Equal(t, "http://target.example:8080/p?q=1", gotURL)

	r = httptest.NewRequest(http.MethodGet, "/", nil)
	r.Host = "169.254.169.254"
	w = httptest.NewRecorder()
	p.ServeHTTP(w, r)
	assert.Equal(t, http.StatusForbidden, w.Code)
}

// roundTripperFunc adapts a function to an http.RoundTripper.
type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// newTestProxy returns a proxy for args whose upstream round trips go to rt.
func newTestProxy(t testing.TB, rt http.RoundTripper, args ...string) *proxy {
	t.Helper()
	cfg, err := parseConfig(args, envOf(nil))
	require.NoError(t, err)
	pm, err := newProxyMetrics(noop.NewMeterProvider())
	require.NoError(t, err)
	return newProxy(cfg, rt, slog.New(slog.DiscardHandler), pm)
}

// okTransport answers every round trip with 204 and counts them.
func okTransport(n *int) http.RoundTripper {
	return roundTripperFunc(func(r *http.Request) (*http.Response, error) {
		*n++
		return &http.Response{StatusCode: http.StatusNoContent, Body: http.NoBody, Header: http.Header{}, Request: r}, nil
	})
}

// arrivedOn returns r as if it had arrived on a connection to local.
func arrivedOn(r *http.Request, local string) *http.Request {
	addr := net.TCPAddrFromAddrPort(netip.MustParseAddrPort(local))
	return r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, addr))
}

func TestProxyHostLineLoop(t *testing.T) {
	t.Parallel()
	tests := []struct {
		local, host string
		loop        bool
	}{
		{"127.0.0.1:8080", "127.0.0.1:8080", true},
		{"127.0.0.1:8080", "localhost:8080", true},
		{"127.0.0.1:8080", "LOCALHOST.:8080", true},
		{"127.0.0.1:8080", "app.localhost:8080", true},
		{"127.0.0.1:8080", "[::1]:8080", true},
		{"127.0.0.1:8080", "0.0.0.0:8080", true},
		{"127.0.0.1:8080", "[::ffff:127.0.0.1]:8080", true},
		{"10.1.2.3:8080", "10.1.2.3:8080", true},
		{"127.0.0.1:80", "localhost", true},
		{"[::1]:8080", "127.0.0.2:8080", true},
		{"127.0.0.1:8080", "127.0.0.1:9000", false},
		{"127.0.0.1:8080", "localhost", false},
		{"10.1.2.3:8080", "10.1.2.4:8080", false},
		{"127.0.0.1:8080", "target.example:8080", false},
	}
	for _, tc := range tests {
		t.Run(tc.local+" "+tc.host, func(t *testing.T) {
			t.Parallel()
			var calls int
			p := newTestProxy(t, okTransport(&calls), "--host-header", "Host", "--upstream-scheme", "http")
			r := arrivedOn(httptest.NewRequest(http.MethodGet, "/", nil), tc.local)
			r.Host = tc.host
			w := httptest.NewRecorder()
			p.ServeHTTP(w, r)
			if !tc.loop {
				assert.Equal(t, http.StatusNoContent, w.Code, w.Body.String())
				assert.Equal(t, 1, calls)
				return
			}
			assert.Equal(t, http.StatusLoopDetected, w.Code)
			assert.Equal(t, "loop detected: Host names this proxy's own address; set it to the upstream host\n", w.Body.String())
			assert.Zero(t, calls, "forwarded")
		})
	}
	t.Run("header routing", func(t *testing.T) {
		t.Parallel()
		var calls int
		p := newTestProxy(t, okTransport(&calls), "--upstream-scheme", "http")
		r := arrivedOn(httptest.NewRequest(http.MethodGet, "/", nil), "127.0.0.1:8080")
		r.Header.Set("X-Upstream-Host", "localhost:8080")
		w := httptest.NewRecorder()
		p.ServeHTTP(w, r)
		assert.Equal(t, http.StatusLoopDetected, w.Code)
		assert.Contains(t, w.Body.String(), "X-Upstream-Host names this proxy's own address")
		assert.Zero(t, calls)
	})
}

// TestProxyViaLoop sends the proxy's outbound request straight back into
// it, as a pinned upstream that resolves to the proxy would: the second
// pass answers 508 and the loop ends after one hop.
func TestProxyViaLoop(t *testing.T) {
	t.Parallel()
	var p *proxy
	hops := 0
	p = newTestProxy(t, roundTripperFunc(func(out *http.Request) (*http.Response, error) {
		hops++
		if hops > 3 { // bound the test if the guard fails
			return &http.Response{StatusCode: http.StatusTeapot, Body: http.NoBody, Header: http.Header{}, Request: out}, nil
		}
		in := httptest.NewRequest(out.Method, out.URL.String(), nil)
		in.Header = out.Header.Clone()
		w := httptest.NewRecorder()
		p.ServeHTTP(w, in)
		res := w.Result()
		res.Request = out
		return res, nil
	}), "--upstream-host", "self.example", "--upstream-scheme", "http")

	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("Via", "1.0 corp-gateway")
	w := httptest.NewRecorder()
	p.ServeHTTP(w, r)
	assert.Equal(t, 1, hops)
	assert.Equal(t, http.StatusLoopDetected, w.Code)
	assert.Equal(t, "loop detected: the request already passed through this proxy (Via: "+p.via+")\n", w.Body.String())
	assert.Regexp(t, `^1\.1 stsproxy-[0-9a-f]{8}$`, p.via)
}

func TestProxyViaChain(t *testing.T) {
	t.Parallel()
	var got http.Header
	last := newTestProxy(t, roundTripperFunc(func(out *http.Request) (*http.Response, error) {
		got = out.Header.Clone()
		return &http.Response{StatusCode: http.StatusNoContent, Body: http.NoBody, Header: http.Header{}, Request: out}, nil
	}), "--upstream-host", "api.example", "--upstream-scheme", "http")
	first := newTestProxy(t, roundTripperFunc(func(out *http.Request) (*http.Response, error) {
		in := httptest.NewRequest(out.Method, out.URL.String(), nil)
		in.Header = out.Header.Clone()
		w := httptest.NewRecorder()
		last.ServeHTTP(w, in)
		res := w.Result()
		res.Request = out
		return res, nil
	}), "--upstream-host", "next-proxy.example", "--upstream-scheme", "http")

	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("Via", "1.0 corp-gateway, 1.1 stsproxy-notthisone")
	w := httptest.NewRecorder()
	first.ServeHTTP(w, r)
	require.Equal(t, http.StatusNoContent, w.Code, w.Body.String())
	assert.Equal(t, []string{"1.0 corp-gateway, 1.1 stsproxy-notthisone", first.via, last.via}, got.Values("Via"))
}

// TestSetXForwardedMatchesStdlib holds setXForwarded, which shares its
// header value slices, to the headers httputil's SetXForwarded sets.
func TestSetXForwardedMatchesStdlib(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		remote string
		prior  []string
		tls    bool
	}{
		{"plain", "10.1.2.3:5555", nil, false},
		{"prior values", "[::1]:80", []string{"10.0.0.1", "10.0.0.2, 10.0.0.3"}, false},
		{"tls", "127.0.0.1:1", []string{"192.0.2.1"}, true},
		{"no port in remote address", "garbage", []string{"192.0.2.1"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			mk := func() *httputil.ProxyRequest {
				in := httptest.NewRequest(http.MethodGet, "http://127.0.0.1:8443/x", nil)
				in.RemoteAddr, in.Host = tc.remote, "front.test:8443"
				if !tc.tls {
					in.TLS = nil
				} else {
					in.TLS = &tls.ConnectionState{}
				}
				out := in.Clone(in.Context())
				if tc.prior != nil {
					out.Header["X-Forwarded-For"] = tc.prior
				}
				return &httputil.ProxyRequest{In: in, Out: out}
			}
			want, got := mk(), mk()
			want.SetXForwarded()
			setXForwarded(got)
			assert.Equal(t, want.Out.Header, got.Out.Header)
			// Appending to one header must not change another.
			got.Out.Header.Add("X-Forwarded-For", "x")
			got.Out.Header.Add("X-Forwarded-Proto", "y")
			assert.Equal(t, want.Out.Header.Get("X-Forwarded-Host"), got.Out.Header.Get("X-Forwarded-Host"))
			assert.Equal(t, [2][]string{{"http"}, {"https"}}, forwardedProto)
		})
	}
}
