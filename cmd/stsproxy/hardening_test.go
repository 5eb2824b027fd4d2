package main

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/stsauth/stsauth"
	"go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

func TestParseConfigRequireTLSUpstream(t *testing.T) {
	t.Parallel()
	c, err := parseConfig(nil, envOf(nil))
	require.NoError(t, err)
	assert.False(t, c.requireTLS, "off by default, as in the proxy stsproxy replaces")

	for _, tc := range []struct {
		args []string
		env  map[string]string
	}{
		{[]string{"--require-tls-upstream"}, nil},
		{nil, map[string]string{"REQUIRE_TLS_UPSTREAM": "true"}},
		{[]string{"--require-tls-upstream", "--upstream-scheme", "http", "--upstream-host", "127.0.0.1:9000"}, nil},
		{[]string{"--require-tls-upstream", "--upstream-scheme", "http"}, nil}, // header routed: refused per request
	} {
		c, err := parseConfig(tc.args, envOf(tc.env))
		require.NoError(t, err, "%v %v", tc.args, tc.env)
		assert.True(t, c.requireTLS)
	}

	_, err = parseConfig([]string{"--require-tls-upstream", "--upstream-scheme", "http", "--upstream-host", "api.example.com"}, envOf(nil))
	var ue *usageError
	require.ErrorAs(t, err, &ue)
	assert.Contains(t, err.Error(), `invalid --require-tls-upstream/REQUIRE_TLS_UPSTREAM "true": want false, or --upstream-scheme/UPSTREAM_SCHEME https, or a loopback --upstream-host/UPSTREAM_HOST`)
}

func TestStartupWarnsOfCleartextTokens(t *testing.T) {
	t.Parallel()
	const clear = "clear text"
	tests := []struct {
		args []string
		warn bool
	}{
		{[]string{"--upstream-scheme", "http", "--upstream-host", "api.example.com"}, true},
		{[]string{"--upstream-scheme", "http", "--allowed-hosts", "*.example.com"}, true},
		{[]string{"--upstream-scheme", "http", "--upstream-host", "127.0.0.1:9000"}, false},
		{[]string{"--upstream-scheme", "http", "--upstream-host", "localhost:9000"}, false},
		{[]string{"--upstream-scheme", "http", "--require-tls-upstream", "--allowed-hosts", "*.example.com"}, false},
		{[]string{"--upstream-host", "api.example.com"}, false},
	}
	for _, tc := range tests {
		cfg, err := parseConfig(tc.args, envOf(nil))
		require.NoError(t, err, tc.args)
		var logs bytes.Buffer
		logStartupWarnings(cfg, slog.New(slog.NewTextHandler(&logs, nil)))
		if tc.warn {
			assert.Contains(t, logs.String(), clear, tc.args)
			assert.Contains(t, logs.String(), "--require-tls-upstream", tc.args)
		} else {
			assert.NotContains(t, logs.String(), clear, tc.args)
		}
	}
}

func TestProxyRequireTLSUpstreamRefusesPlainHTTP(t *testing.T) {
	t.Parallel()
	ts, err := stsauth.NewTokenSource(unusedSTS{})
	require.NoError(t, err)
	t.Cleanup(func() { ts.Close() })
	sent := 0
	tr := &stsauth.Transport{Source: ts, Base: okTransport(&sent), RequireTLS: true}
	p := newTestProxy(t, tr, "--upstream-scheme", "http", "--require-tls-upstream")
	r := httptest.NewRequest(http.MethodGet, "/", nil).WithContext(context.Background())
	r.Header.Set("X-Upstream-Host", "api.example.com")
	w := httptest.NewRecorder()
	p.ServeHTTP(w, r)
	assert.Equal(t, http.StatusForbidden, w.Code)
	assert.Equal(t, "refusing to send a token to upstream host \"api.example.com\" in clear text\n", w.Body.String())
	assert.Zero(t, sent, "nothing sent")
}

func TestStaticAudienceWithClientChosenHostNeedsAllowlist(t *testing.T) {
	t.Parallel()
	const want = `invalid --token-audience/TOKEN_AUDIENCE "https://api.example.com": with routing by --host-header/HOST_HEADER (X-Upstream-Host) any client could send this static token to a host it names: ` +
		`pin the upstream with --upstream-host/UPSTREAM_HOST, or set --allowed-hosts/ALLOWED_HOSTS to the hosts it may go to ('*' allows any host)`
	for _, tc := range []struct {
		args []string
		env  map[string]string
	}{
		{[]string{"--token-audience", "https://api.example.com"}, nil},
		{nil, map[string]string{"TOKEN_AUDIENCE": "https://api.example.com"}},
		{[]string{"--token-audience", "https://api.example.com", "--host-header", "Host"}, nil},
	} {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), tc.args, envOf(tc.env), &stdout, &stderr)
		assert.Equal(t, 2, code, "%v %v", tc.args, tc.env)
		if len(tc.args) > 2 {
			assert.Contains(t, stderr.String(), "(Host) any client could send", tc.args)
		} else {
			assert.Contains(t, stderr.String(), want, "%v %v", tc.args, tc.env)
		}
	}

	// Pinned, allowlisted, or '*' as the explicit opt-out, which keeps the
	// warning; per-request audiences start with the warning.
	for _, tc := range []struct {
		args []string
		warn bool
	}{
		{[]string{"--token-audience", "a", "--upstream-host", "api.example.com"}, false},
		{[]string{"--token-audience", "a", "--allowed-hosts", "*.example.com"}, false},
		{[]string{"--token-audience", "a", "--allowed-hosts", "*"}, true},
		{nil, true},
	} {
		cfg, err := parseConfig(tc.args, envOf(nil))
		require.NoError(t, err, tc.args)
		var logs bytes.Buffer
		logStartupWarnings(cfg, slog.New(slog.NewTextHandler(&logs, nil)))
		if tc.warn {
			assert.Contains(t, logs.String(), "clients can direct tokens to any host", tc.args)
		} else {
			assert.NotContains(t, logs.String(), "any host", tc.args)
		}
	}
	cfg, err := parseConfig([]string{"--allowed-hosts", "*"}, envOf(nil))
	require.NoError(t, err)
	assert.True(t, cfg.anyHost)
	assert.Nil(t, cfg.allowed)
	assert.Nil(t, cfg.allowedHosts)

	_, err = parseConfig([]string{"--allowed-hosts", "*,a.example"}, envOf(nil))
	assert.ErrorContains(t, err, `invalid --allowed-hosts/ALLOWED_HOSTS "*,a.example": want '*' alone`)

	cfg, err = parseCommandConfig(tokenCommand, []string{"--token-audience", "a"}, envOf(nil))
	require.NoError(t, err, "the token command routes nothing")
	assert.Equal(t, []string{"a"}, cfg.audience.Values())
}

// serverStatusLabels returns the http.response.status_code values recorded
// on the server duration histogram, with their counts.
func serverStatusLabels(t *testing.T, reader *sdkmetric.ManualReader) map[string]uint64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	got := map[string]uint64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != "http.server.request.duration" {
				continue
			}
			for _, dp := range m.Data.(metricdata.Histogram[float64]).DataPoints {
				v, _ := dp.Attributes.Value("http.response.status_code")
				got[v.AsString()] += dp.Count
			}
		}
	}
	return got
}

func TestProxyUpstreamStatusBelow100IsBadGateway(t *testing.T) {
	t.Parallel()
	pm, reader := newTestProxyMetrics(t)
	cfg, err := parseConfig([]string{"--upstream-host", "up.example", "--access-log=false"}, envOf(nil))
	require.NoError(t, err)
	var logs syncBuffer
	for _, code := range []int{0, -1, 99} {
		rt := roundTripperFunc(func(r *http.Request) (*http.Response, error) {
			return &http.Response{StatusCode: code, Body: http.NoBody, Header: http.Header{}, Request: r}, nil
		})
		p := newProxy(cfg, rt, slog.New(slog.NewJSONHandler(&logs, nil)), pm)
		w := httptest.NewRecorder()
		require.NotPanics(t, func() { p.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/", nil)) })
		assert.Equal(t, http.StatusBadGateway, w.Code, "upstream status %d", code)
		assert.Equal(t, "bad gateway\n", w.Body.String())
	}
	assert.Equal(t, 3, strings.Count(logs.String(), "\n"), "one line per request: %s", logs.String())
	assert.Equal(t, 3, strings.Count(logs.String(), "upstream answered an invalid status code"))
	assert.Equal(t, map[string]uint64{"502": 3}, serverStatusLabels(t, reader))
}

func TestStatusCodeLabelsAreBounded(t *testing.T) {
	t.Parallel()
	for code, want := range map[int]string{200: "200", 418: "418", 101: "101", 599: "5xx", 299: "2xx", 100: "100", 199: "1xx",
		600: "_OTHER", 999: "_OTHER", 0: "_OTHER", -5: "_OTHER", 1000: "_OTHER"} {
		assert.Equal(t, want, boundedStatus(code), "boundedStatus(%d)", code)
	}

	pm, reader := newTestProxyMetrics(t)
	cfg, err := parseConfig([]string{"--upstream-host", "up.example", "--access-log=false"}, envOf(nil))
	require.NoError(t, err)
	for _, code := range []int{200, 204, 299, 599, 600, 777, 999} {
		rt := roundTripperFunc(func(r *http.Request) (*http.Response, error) {
			return &http.Response{StatusCode: code, Body: http.NoBody, Header: http.Header{}, Request: r}, nil
		})
		p := newProxy(cfg, rt, slog.New(slog.DiscardHandler), pm)
		w := httptest.NewRecorder()
		p.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/", nil))
		assert.Equal(t, code, w.Code)
	}
	assert.Equal(t, map[string]uint64{"200": 1, "204": 1, "2xx": 1, "5xx": 1, "_OTHER": 3}, serverStatusLabels(t, reader))
}

// blockingSTS never answers: each call waits for its context to end.
type blockingSTS struct{ calls atomic.Int32 }

func (b *blockingSTS) GetWebIdentityToken(ctx context.Context, _ *sts.GetWebIdentityTokenInput, _ ...func(*sts.Options)) (*sts.GetWebIdentityTokenOutput, error) {
	b.calls.Add(1)
	<-ctx.Done()
	return nil, ctx.Err()
}

func TestTokenFetchTimeoutBoundsTheWait(t *testing.T) {
	t.Parallel()
	cfg, err := parseConfig(nil, envOf(nil))
	require.NoError(t, err)
	assert.Equal(t, stsauth.DefaultFetchTimeout, cfg.fetchTimeout)
	cfg, err = parseConfig(nil, envOf(map[string]string{"TOKEN_FETCH_TIMEOUT": "2s"}))
	require.NoError(t, err)
	assert.Equal(t, 2*time.Second, cfg.fetchTimeout)
	for _, bad := range []string{"0s", "-1s", "soon"} {
		_, err = parseConfig([]string{"--token-fetch-timeout", bad}, envOf(nil))
		assert.ErrorContains(t, err, `invalid --token-fetch-timeout/TOKEN_FETCH_TIMEOUT "`+bad+`": want a duration more than 0`)
	}

	cfg, err = parseConfig([]string{"--upstream-host", "up.example", "--token-fetch-timeout", "50ms", "--access-log=false"}, envOf(nil))
	require.NoError(t, err)
	client := &blockingSTS{}
	ts, err := newTokenSource(cfg, client, noop.NewMeterProvider(), slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(func() { ts.Close() })
	sent := 0
	p := newTestProxy(t, &stsauth.Transport{Source: ts, Base: okTransport(&sent)}, "--upstream-host", "up.example")
	start := time.Now()
	w := httptest.NewRecorder()
	p.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/", nil))
	elapsed := time.Since(start)
	assert.Equal(t, http.StatusBadGateway, w.Code)
	assert.Equal(t, "token unavailable\n", w.Body.String())
	assert.Less(t, elapsed, 10*time.Second, "the request waited past --token-fetch-timeout on an STS that never answers")
	assert.Zero(t, sent)
	assert.Positive(t, client.calls.Load())
}

func TestLogForwardProxy(t *testing.T) {
	t.Parallel()
	fwd := &url.URL{Scheme: "http", User: url.UserPassword("user", "hunter2"), Host: "fwd.example:3128"}
	via := stsauth.GuardProxy(http.ProxyURL(fwd))
	direct := stsauth.GuardProxy(func(*http.Request) (*url.URL, error) { return nil, nil })
	tests := []struct {
		name  string
		args  []string
		proxy func(*http.Request) (*url.URL, error)
		want  []string
	}{
		{"pinned https", []string{"--upstream-host", "api.example.com"}, via, []string{"level=INFO", "tunnel through it", "forward_proxy=fwd.example:3128", "upstream_host=api.example.com"}},
		{"routed https", []string{"--allowed-hosts", "*.example.com"}, via, []string{"level=INFO", "upstreams that NO_PROXY does not exclude"}},
		{"pinned http", []string{"--upstream-host", "api.example.com", "--upstream-scheme", "http"}, via, []string{"level=WARN", "over plain http", "refused (403)", "NO_PROXY"}},
		{"no forward proxy", []string{"--upstream-host", "api.example.com"}, direct, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := parseConfig(tc.args, envOf(nil))
			require.NoError(t, err)
			var logs bytes.Buffer
			logForwardProxy(cfg, slog.New(slog.NewTextHandler(&logs, nil)), tc.proxy)
			if tc.want == nil {
				assert.Empty(t, logs.String())
			}
			for _, w := range tc.want {
				assert.Contains(t, logs.String(), w)
			}
			assert.NotContains(t, logs.String(), "hunter2")
		})
	}
}
