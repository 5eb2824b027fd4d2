package main

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/stsauth/stsauth"
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
