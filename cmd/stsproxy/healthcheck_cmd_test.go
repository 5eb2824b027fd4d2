package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// adminPort starts an admin listener on loopback serving h and returns its
// port.
func adminPort(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	_, port, err := net.SplitHostPort(srv.Listener.Addr().String())
	require.NoError(t, err)
	return port
}

func TestHealthcheckCommand(t *testing.T) {
	t.Parallel()
	healthy := adminPort(t, adminHandler(&config{metricsPath: "/metrics"}, nil, func() bool { return false }))
	failing := adminPort(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	// A redirect to a healthy /healthz is not healthy: the check never
	// follows one.
	redirecting := adminPort(t, http.RedirectHandler("http://127.0.0.1:"+healthy+"/healthz", http.StatusFound))
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()

	tests := []struct {
		name       string
		args       []string
		env        map[string]string
		code       int
		wantStderr string
	}{
		// Not ready, but alive: the health check is about liveness.
		{"healthy via env, wildcard host", nil, map[string]string{"METRICS_LISTEN_ADDR": ":" + healthy}, 0, ""},
		{"healthy via flag", []string{"--metrics-listen-addr", "127.0.0.1:" + healthy}, nil, 0, ""},
		{"503", []string{"--metrics-listen-addr", "0.0.0.0:" + failing}, nil, 1, "503 Service Unavailable"},
		{"redirect not followed", []string{"--metrics-listen-addr", "127.0.0.1:" + redirecting}, nil, 1, "302 Found"},
		{"nobody listening", []string{"--metrics-listen-addr", closed.Listener.Addr().String()}, nil, 1, "connection refused"},
		{"port 0", []string{"--metrics-listen-addr", "127.0.0.1:0"}, nil, 1, "has port 0"},
		{"metrics disabled", nil, map[string]string{"METRICS_ENABLED": "false"}, 1, "serves no /healthz"},
		{"bad address", []string{"--metrics-listen-addr", "nope"}, nil, 2, "invalid --metrics-listen-addr"},
		{"flag it does not take", []string{"--upstream-host", "a.example"}, nil, 2, "stsproxy: healthcheck: unknown flag --upstream-host: stsproxy healthcheck does not take it"},
		// The proxy's other env vars are ignored, not validated.
		{"other env ignored", nil, map[string]string{"METRICS_LISTEN_ADDR": ":" + healthy, "TOKEN_DURATION": "2h"}, 0, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), append([]string{"healthcheck"}, tc.args...), envOf(tc.env), &stdout, &stderr)
			assert.Equal(t, tc.code, code, "stderr: %s", stderr.String())
			if tc.code == 0 {
				assert.Equal(t, "ok\n", stdout.String())
			}
			assert.Contains(t, stderr.String(), tc.wantStderr)
		})
	}
}

func TestHealthzURL(t *testing.T) {
	t.Parallel()
	for addr, want := range map[string]string{
		":9090":          "http://127.0.0.1:9090/healthz",
		"0.0.0.0:9090":   "http://127.0.0.1:9090/healthz",
		"[::]:9090":      "http://[::1]:9090/healthz",
		"10.0.0.7:9090":  "http://10.0.0.7:9090/healthz",
		"[fd00::7]:9090": "http://[fd00::7]:9090/healthz",
	} {
		got, err := healthzURL(addr)
		require.NoError(t, err)
		assert.Equal(t, want, got, "healthzURL(%q)", addr)
	}
}
