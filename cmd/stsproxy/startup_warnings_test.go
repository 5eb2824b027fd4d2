package main

import (
	"bytes"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestStartupWarnsOfNonLoopbackListener checks the warning that anyone who
// reaches a listener off loopback acts with the proxy's IAM role, and that
// only --allow-remote-clients (the shared proxy's) silences it: an
// allowlist bounds where tokens go, not who asks for them.
func TestStartupWarnsOfNonLoopbackListener(t *testing.T) {
	t.Parallel()
	const warning = "--listen-addr is not a loopback address"
	pinned := []string{"--upstream-host", "api.example.com"}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		warn bool
	}{
		{"default, every interface", nil, nil, true},
		{"ipv4 wildcard", []string{"--listen-addr", "0.0.0.0:8080"}, nil, true},
		{"ipv6 wildcard", []string{"--listen-addr", "[::]:8080"}, nil, true},
		{"pod address", []string{"--listen-addr", "10.0.0.7:8080"}, nil, true},
		{"a name", []string{"--listen-addr", "proxy.internal:8080"}, nil, true},
		{"allowlist is not enough", []string{"--allowed-hosts", "api.example.com"}, nil, true},
		{"127.0.0.1", []string{"--listen-addr", "127.0.0.1:8080"}, nil, false},
		{"127.0.0.2", []string{"--listen-addr", "127.0.0.2:8080"}, nil, false},
		{"localhost", []string{"--listen-addr", "localhost:8080"}, nil, false},
		{"::1", []string{"--listen-addr", "[::1]:8080"}, nil, false},
		{"shared proxy flag", []string{"--allow-remote-clients"}, nil, false},
		{"shared proxy env", nil, map[string]string{"ALLOW_REMOTE_CLIENTS": "true"}, false},
		{"flag beats env", []string{"--allow-remote-clients=false"}, map[string]string{"ALLOW_REMOTE_CLIENTS": "true"}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := parseConfig(append(tc.args, pinned...), envOf(tc.env))
			require.NoError(t, err)
			var logs bytes.Buffer
			logStartupWarnings(cfg, slog.New(slog.NewTextHandler(&logs, nil)))
			if tc.warn {
				assert.Contains(t, logs.String(), warning)
				assert.Contains(t, logs.String(), "--allow-remote-clients/ALLOW_REMOTE_CLIENTS")
			} else {
				assert.NotContains(t, logs.String(), warning)
			}
		})
	}
	_, err := parseConfig([]string{"--allow-remote-clients=maybe"}, envOf(nil))
	assert.ErrorContains(t, err, `invalid --allow-remote-clients/ALLOW_REMOTE_CLIENTS "maybe": want true or false`)
}
