package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/stsauth/stsauth"
)

// envOf returns a getenv over a fixed map.
func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestParseConfigDefaults(t *testing.T) {
	t.Parallel()
	c, err := parseConfig(nil, envOf(nil))
	require.NoError(t, err)
	assert.Equal(t, ":8080", c.listenAddr)
	assert.Equal(t, "", c.upstreamHost)
	assert.Equal(t, "https", c.upstreamScheme)
	assert.Equal(t, "X-Upstream-Host", c.hostHeader)
	assert.Equal(t, 30*time.Second, c.upstreamTimeout)
	assert.True(t, c.audience.IsZero())
	assert.Equal(t, "RS256", c.signingAlg)
	assert.Equal(t, time.Hour, c.duration)
	assert.Equal(t, 5*time.Minute, c.refreshSkew)
	assert.Equal(t, slog.LevelInfo, c.logLevel)
	assert.Equal(t, "json", c.logFormat)
	assert.Nil(t, c.tlsCert)
	assert.True(t, c.metricsEnabled)
	assert.Equal(t, ":9090", c.metricsListenAddr)
	assert.Equal(t, "/metrics", c.metricsPath)
	assert.Nil(t, c.allowed)
	assert.Empty(t, c.tags)
	assert.Equal(t, 1024, c.cacheSize)
	assert.Equal(t, 32, c.maxFetches)
	assert.Zero(t, c.shutdownDelay, "drop-in: no delay unless asked")
	assert.Equal(t, "Authorization", c.tokenHeader)
	assert.Equal(t, "Bearer {token}", c.tokenFormat)
	assert.Equal(t, 15*time.Second, c.shutdownTimeout)
	assert.False(t, c.localSTS)
	assert.False(t, c.version)
}

func TestParseConfigValid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		args  []string
		env   map[string]string
		check func(t *testing.T, c *config)
	}{
		{"env sets value", nil, map[string]string{"UPSTREAM_HOST": "api.example.com:8443"},
			func(t *testing.T, c *config) { assert.Equal(t, "api.example.com:8443", c.upstreamHost) }},
		{"flag beats env", []string{"--upstream-host", "a.example"}, map[string]string{"UPSTREAM_HOST": "b.example"},
			func(t *testing.T, c *config) { assert.Equal(t, "a.example", c.upstreamHost) }},
		{"flag equal to default still beats env", []string{"--listen-addr=:8080"}, map[string]string{"LISTEN_ADDR": ":1234"},
			func(t *testing.T, c *config) { assert.Equal(t, ":8080", c.listenAddr) }},
		{"single dash flag", []string{"-upstream-scheme", "http"}, nil,
			func(t *testing.T, c *config) { assert.Equal(t, "http", c.upstreamScheme) }},
		{"audiences repeatable", []string{"--token-audience", "b", "--token-audience", "a", "--upstream-host", "api.example.com"}, nil,
			func(t *testing.T, c *config) { assert.Equal(t, []string{"a", "b"}, c.audience.Values()) }},
		{"audience env comma list", nil, map[string]string{"TOKEN_AUDIENCE": "x,y", "ALLOWED_HOSTS": "*"},
			func(t *testing.T, c *config) { assert.Equal(t, []string{"x", "y"}, c.audience.Values()) }},
		{"audience flag replaces env entirely", []string{"--token-audience", "f"}, map[string]string{"TOKEN_AUDIENCE": "x,y", "UPSTREAM_HOST": "api.example.com"},
			func(t *testing.T, c *config) { assert.Equal(t, []string{"f"}, c.audience.Values()) }},
		{"ES384", []string{"--token-signing-algorithm", "ES384"}, nil,
			func(t *testing.T, c *config) { assert.Equal(t, "ES384", c.signingAlg) }},
		{"enums in any case", []string{"--token-signing-algorithm", "es384", "--log-format", "JSON", "--upstream-scheme", "HTTP"}, map[string]string{"LOG_LEVEL": "WARN"},
			func(t *testing.T, c *config) {
				assert.Equal(t, "ES384", c.signingAlg)
				assert.Equal(t, "json", c.logFormat)
				assert.Equal(t, "http", c.upstreamScheme)
				assert.Equal(t, slog.LevelWarn, c.logLevel)
			}},
		{"enums in any case from env", nil, map[string]string{"TOKEN_SIGNING_ALGORITHM": "rs256", "LOG_FORMAT": "Text", "UPSTREAM_SCHEME": "HTTPS", "LOG_LEVEL": "Debug"},
			func(t *testing.T, c *config) {
				assert.Equal(t, "RS256", c.signingAlg)
				assert.Equal(t, "text", c.logFormat)
				assert.Equal(t, "https", c.upstreamScheme)
				assert.Equal(t, slog.LevelDebug, c.logLevel)
			}},
		{"metrics disabled: admin address may equal listen address", []string{"--metrics-enabled=false", "--metrics-listen-addr", ":8080"}, nil,
			func(t *testing.T, c *config) { assert.False(t, c.metricsEnabled) }},
		{"duration bounds", []string{"--token-duration", "60s", "--token-refresh-skew", "59s"}, nil,
			func(t *testing.T, c *config) {
				assert.Equal(t, time.Minute, c.duration)
				assert.Equal(t, 59*time.Second, c.refreshSkew)
			}},
		{"default skew halves a short duration", []string{"--token-duration", "4m"}, nil,
			func(t *testing.T, c *config) {
				assert.Equal(t, 2*time.Minute, c.refreshSkew)
				assert.True(t, c.skewHalved)
			}},
		{"host header Host", []string{"--host-header", "host"}, nil,
			func(t *testing.T, c *config) {
				assert.Equal(t, "Host", c.hostHeader)
				assert.True(t, c.routeByRequestHost())
			}},
		{"host header canonicalised", []string{"--host-header", "x-target"}, nil,
			func(t *testing.T, c *config) { assert.Equal(t, "X-Target", c.hostHeader) }},
		{"allowed hosts comma and repeat", []string{"--allowed-hosts", "a.example,*.b.example:443", "--allowed-hosts", "c.example"}, nil,
			func(t *testing.T, c *config) {
				assert.Equal(t, []string{"a.example", "*.b.example:443", "c.example"}, c.allowedHosts)
				assert.True(t, c.allowed.Allows("c.example"))
			}},
		{"allowed hosts env", nil, map[string]string{"ALLOWED_HOSTS": "a.example,b.example"},
			func(t *testing.T, c *config) { assert.Equal(t, []string{"a.example", "b.example"}, c.allowedHosts) }},
		{"pinned host allowed", []string{"--upstream-host", "a.example", "--allowed-hosts", "a.example"}, nil,
			func(t *testing.T, c *config) { assert.Equal(t, "a.example", c.upstreamHost) }},
		{"tags flag", []string{"--token-tag", "team=core", "--token-tag", "env=a=b"}, nil,
			func(t *testing.T, c *config) {
				assert.Equal(t, map[string]string{"team": "core", "env": "a=b"}, c.tags)
			}},
		{"tags env", nil, map[string]string{"TOKEN_TAGS": "team=core,env="},
			func(t *testing.T, c *config) { assert.Equal(t, map[string]string{"team": "core", "env": ""}, c.tags) }},
		{"metrics disabled by env", nil, map[string]string{"METRICS_ENABLED": "false"},
			func(t *testing.T, c *config) { assert.False(t, c.metricsEnabled) }},
		{"access log on by default", nil, nil,
			func(t *testing.T, c *config) { assert.True(t, c.accessLog) }},
		{"access log off by env", nil, map[string]string{"ACCESS_LOG": "false"},
			func(t *testing.T, c *config) { assert.False(t, c.accessLog) }},
		{"bool flag bare", []string{"--local-sts"}, nil,
			func(t *testing.T, c *config) { assert.True(t, c.localSTS) }},
		{"bool flag beats env", []string{"--metrics-enabled=true"}, map[string]string{"METRICS_ENABLED": "false"},
			func(t *testing.T, c *config) { assert.True(t, c.metricsEnabled) }},
		{"both port 0 on loopback", []string{"--listen-addr", "127.0.0.1:0", "--metrics-listen-addr", "127.0.0.1:0"}, nil,
			func(t *testing.T, c *config) { assert.Equal(t, "127.0.0.1:0", c.metricsListenAddr) }},
		{"log level and format", []string{"--log-level", "debug", "--log-format", "text"}, nil,
			func(t *testing.T, c *config) {
				assert.Equal(t, slog.LevelDebug, c.logLevel)
				assert.Equal(t, "text", c.logFormat)
			}},
		{"cache size and timeouts", []string{"--token-cache-size", "1", "--shutdown-timeout", "1ms", "--upstream-timeout", "2s"}, nil,
			func(t *testing.T, c *config) {
				assert.Equal(t, 1, c.cacheSize)
				assert.Equal(t, time.Millisecond, c.shutdownTimeout)
				assert.Equal(t, 2*time.Second, c.upstreamTimeout)
			}},
		{"upstream idle conns", nil, map[string]string{"UPSTREAM_IDLE_CONNS": "8"},
			func(t *testing.T, c *config) {
				assert.Equal(t, 8, c.upstreamIdle)
				base := newBaseTransport(c)
				assert.Equal(t, 8, base.MaxIdleConns)
				assert.Equal(t, 8, base.MaxIdleConnsPerHost)
			}},
		{"upstream idle conns default", nil, nil,
			func(t *testing.T, c *config) {
				base := newBaseTransport(c)
				assert.Equal(t, 64, base.MaxIdleConns)
				assert.Equal(t, 64, base.MaxIdleConnsPerHost)
			}},
		{"token header and format env", nil, map[string]string{"TOKEN_HEADER": "x-api-token", "TOKEN_FORMAT": "Bearer tenant-a:{token}"},
			func(t *testing.T, c *config) {
				assert.Equal(t, "X-Api-Token", c.tokenHeader)
				assert.Equal(t, "Bearer tenant-a:{token}", c.tokenFormat)
			}},
		{"token format flag beats env", []string{"--token-format", "{token}"}, map[string]string{"TOKEN_FORMAT": "x {token}"},
			func(t *testing.T, c *config) { assert.Equal(t, "{token}", c.tokenFormat) }},
		{"shutdown delay env", nil, map[string]string{"SHUTDOWN_DELAY": "5s"},
			func(t *testing.T, c *config) { assert.Equal(t, 5*time.Second, c.shutdownDelay) }},
		{"shutdown delay flag beats env", []string{"--shutdown-delay", "0s"}, map[string]string{"SHUTDOWN_DELAY": "5s"},
			func(t *testing.T, c *config) { assert.Zero(t, c.shutdownDelay) }},
		{"fetch concurrency", nil, map[string]string{"TOKEN_FETCH_CONCURRENCY": "1024"},
			func(t *testing.T, c *config) { assert.Equal(t, 1024, c.maxFetches) }},
		{"mint rate defaults", nil, nil,
			func(t *testing.T, c *config) {
				assert.Equal(t, stsauth.DefaultMintRate, c.mintRate)
				assert.Equal(t, stsauth.DefaultMintBurst, c.mintBurst)
			}},
		{"mint rate env", nil, map[string]string{"TOKEN_MINT_RATE": "0.5", "TOKEN_MINT_BURST": "20"},
			func(t *testing.T, c *config) {
				assert.Equal(t, 0.5, c.mintRate)
				assert.Equal(t, 20, c.mintBurst)
			}},
		{"mint rate flag beats env, 0 is no limit", []string{"--token-mint-rate", "0"}, map[string]string{"TOKEN_MINT_RATE": "5"},
			func(t *testing.T, c *config) { assert.Zero(t, c.mintRate) }},
		{"ipv6 pinned host", []string{"--upstream-host", "[2001:db8::1]:443"}, nil,
			func(t *testing.T, c *config) { assert.Equal(t, "[2001:db8::1]:443", c.upstreamHost) }},
		{"VERSION env ignored", nil, map[string]string{"VERSION": "1.2.3"},
			func(t *testing.T, c *config) { assert.False(t, c.version) }},
		{"version", []string{"--version", "--token-duration", "2h"}, nil,
			func(t *testing.T, c *config) { assert.True(t, c.version) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := parseConfig(tc.args, envOf(tc.env))
			require.NoError(t, err)
			tc.check(t, c)
		})
	}
}

func TestParseConfigInvalid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string // substring of the error
	}{
		{"unknown flag", []string{"--nope"}, nil, "unknown flag --nope"},
		{"positional", []string{"serve"}, nil, `unexpected argument "serve"`},
		{"listen addr", []string{"--listen-addr", "8080"}, nil, `invalid --listen-addr/LISTEN_ADDR "8080": want host:port`},
		{"listen port", []string{"--listen-addr", ":99999"}, nil, `invalid --listen-addr/LISTEN_ADDR ":99999": want host:port`},
		{"upstream scheme", []string{"--upstream-host", "https://x"}, nil,
			`invalid --upstream-host/UPSTREAM_HOST "https://x": want host[:port] without a scheme; set the scheme with --upstream-scheme/UPSTREAM_SCHEME`},
		{"upstream path", nil, map[string]string{"UPSTREAM_HOST": "x.example/p"}, `invalid --upstream-host/UPSTREAM_HOST "x.example/p": want host[:port]: must not include a path`},
		{"upstream port", []string{"--upstream-host", "x:0"}, nil, `invalid --upstream-host/UPSTREAM_HOST "x:0": want host[:port]: port "0", want a number from 1 to 65535`},
		{"upstream imds", []string{"--upstream-host", "169.254.169.254"}, nil, `invalid --upstream-host/UPSTREAM_HOST "169.254.169.254": want a host other than a link-local`},
		{"upstream not allowed", []string{"--upstream-host", "x.example", "--allowed-hosts", "y.example"}, nil,
			`invalid --upstream-host/UPSTREAM_HOST "x.example": want a host that --allowed-hosts/ALLOWED_HOSTS allows`},
		{"scheme", []string{"--upstream-scheme", "ftp"}, nil, `invalid --upstream-scheme/UPSTREAM_SCHEME "ftp": want http or https`},
		{"host header", []string{"--host-header", "X Bad"}, nil, `invalid --host-header/HOST_HEADER "X Bad": want an HTTP header name`},
		{"host header authorization", []string{"--host-header", "authorization"}, nil, `invalid --host-header/HOST_HEADER "authorization": want a header other than Authorization`},
		{"allowed hosts empty item", nil, map[string]string{"ALLOWED_HOSTS": "a,,b"}, `invalid --allowed-hosts/ALLOWED_HOSTS "a,,b": want a comma list`},
		{"allowed hosts space", []string{"--allowed-hosts", "a, b"}, nil, `invalid --allowed-hosts/ALLOWED_HOSTS "a, b": want a comma list`},
		{"upstream timeout zero", []string{"--upstream-timeout", "0s"}, nil, `invalid --upstream-timeout/UPSTREAM_TIMEOUT "0s": want a duration more than 0`},
		{"upstream timeout junk", nil, map[string]string{"UPSTREAM_TIMEOUT": "soon"}, `invalid --upstream-timeout/UPSTREAM_TIMEOUT "soon": want a duration more than 0`},
		{"audience empty", []string{"--token-audience", ""}, nil, `invalid --token-audience/TOKEN_AUDIENCE "": want non-empty audience values`},
		{"audience env empty item", nil, map[string]string{"TOKEN_AUDIENCE": "a,,b"}, `invalid --token-audience/TOKEN_AUDIENCE "a,,b": want non-empty audience values`},
		{"audience whitespace", nil, map[string]string{"TOKEN_AUDIENCE": "a, b"}, `invalid --token-audience/TOKEN_AUDIENCE " b": want an audience without white space`},
		{"audience too many", nil, map[string]string{"TOKEN_AUDIENCE": "1,2,3,4,5,6,7,8,9,10,11"}, `want 1 to 10 values`},
		{"algorithm", []string{"--token-signing-algorithm", "HS256"}, nil, `invalid --token-signing-algorithm/TOKEN_SIGNING_ALGORITHM "HS256": want RS256 or ES384`},
		{"duration long", []string{"--token-duration", "2h"}, nil, `invalid --token-duration/TOKEN_DURATION "2h": want 60s to 1h`},
		{"duration short", nil, map[string]string{"TOKEN_DURATION": "59s"}, `invalid --token-duration/TOKEN_DURATION "59s": want 60s to 1h`},
		{"duration fraction", []string{"--token-duration", "90.5s"}, nil, `invalid --token-duration/TOKEN_DURATION "90.5s": want whole seconds`},
		{"skew zero", []string{"--token-refresh-skew", "0s"}, nil, `invalid --token-refresh-skew/TOKEN_REFRESH_SKEW "0s": want more than 0 and less than --token-duration (1h0m0s)`},
		{"skew not below duration", []string{"--token-duration", "5m", "--token-refresh-skew", "5m"}, nil, `invalid --token-refresh-skew/TOKEN_REFRESH_SKEW "5m": want more than 0 and less than --token-duration (5m0s)`},
		{"tag no equals", []string{"--token-tag", "team"}, nil, `invalid --token-tag/TOKEN_TAGS "team": want key=value`},
		{"tag empty key", nil, map[string]string{"TOKEN_TAGS": "=v"}, `invalid --token-tag/TOKEN_TAGS "=v": want key=value`},
		{"tag duplicate", []string{"--token-tag", "a=1", "--token-tag", "a=2"}, nil, `invalid --token-tag/TOKEN_TAGS "a=2": want each key once`},
		{"tag long value", []string{"--token-tag", "a=" + strings.Repeat("v", 257)}, nil, `want a value of at most 256 characters`},
		{"idle conns zero", []string{"--upstream-idle-conns", "0"}, nil, `invalid --upstream-idle-conns/UPSTREAM_IDLE_CONNS "0": want an integer from 1 to 100000`},
		{"idle conns junk", nil, map[string]string{"UPSTREAM_IDLE_CONNS": "lots"}, `invalid --upstream-idle-conns/UPSTREAM_IDLE_CONNS "lots": want an integer from 1 to 100000`},
		{"cache size", []string{"--token-cache-size", "0"}, nil, `invalid --token-cache-size/TOKEN_CACHE_SIZE "0": want an integer of at least 1`},
		{"cache size junk", nil, map[string]string{"TOKEN_CACHE_SIZE": "many"}, `invalid --token-cache-size/TOKEN_CACHE_SIZE "many": want an integer of at least 1`},
		{"mint rate negative", []string{"--token-mint-rate", "-1"}, nil, `invalid --token-mint-rate/TOKEN_MINT_RATE "-1": want a number of tokens a second, 0 (no limit) or more`},
		{"mint rate NaN", nil, map[string]string{"TOKEN_MINT_RATE": "NaN"}, `invalid --token-mint-rate/TOKEN_MINT_RATE "NaN": want a number of tokens a second, 0 (no limit) or more`},
		{"mint rate not a number", []string{"--token-mint-rate", "10/s"}, nil, `invalid --token-mint-rate/TOKEN_MINT_RATE "10/s"`},
		{"mint burst zero", []string{"--token-mint-burst", "0"}, nil, `invalid --token-mint-burst/TOKEN_MINT_BURST "0": want an integer of at least 1`},
		{"fetch concurrency zero", []string{"--token-fetch-concurrency", "0"}, nil, `invalid --token-fetch-concurrency/TOKEN_FETCH_CONCURRENCY "0": want an integer from 1 to 1024`},
		{"fetch concurrency too many", nil, map[string]string{"TOKEN_FETCH_CONCURRENCY": "1025"}, `invalid --token-fetch-concurrency/TOKEN_FETCH_CONCURRENCY "1025": want an integer from 1 to 1024`},
		{"log level", []string{"--log-level", "trace"}, nil, `invalid --log-level/LOG_LEVEL "trace": want debug, info, warn or error`},
		{"log format", nil, map[string]string{"LOG_FORMAT": "xml"}, `invalid --log-format/LOG_FORMAT "xml": want json or text`},
		{"tls cert only", []string{"--tls-cert", "c.pem"}, nil, `invalid --tls-key/TLS_KEY "": want a key file, since --tls-cert/TLS_CERT is set`},
		{"tls key only", nil, map[string]string{"TLS_KEY": "k.pem"}, `invalid --tls-cert/TLS_CERT "": want a certificate file, since --tls-key/TLS_KEY is set`},
		{"tls missing files", []string{"--tls-cert", "/nonexistent/c.pem", "--tls-key", "/nonexistent/k.pem"}, nil, `invalid --tls-cert/TLS_CERT "/nonexistent/c.pem": want a readable PEM certificate`},
		{"metrics enabled", []string{"--metrics-enabled=maybe"}, nil, `invalid --metrics-enabled/METRICS_ENABLED "maybe": want true or false`},
		{"metrics enabled env", nil, map[string]string{"METRICS_ENABLED": "maybe"}, `invalid --metrics-enabled/METRICS_ENABLED "maybe": want true or false`},
		{"metrics addr same", []string{"--metrics-listen-addr", ":8080"}, nil, `invalid --metrics-listen-addr/METRICS_LISTEN_ADDR ":8080": want an address different from --listen-addr/LISTEN_ADDR`},
		{"metrics addr bad", nil, map[string]string{"METRICS_LISTEN_ADDR": "nope"}, `invalid --metrics-listen-addr/METRICS_LISTEN_ADDR "nope": want host:port`},
		{"metrics path", []string{"--metrics-path", "metrics"}, nil, `invalid --metrics-path/METRICS_PATH "metrics": want a path starting with /`},
		{"metrics path clash", []string{"--metrics-path", "/readyz"}, nil, `invalid --metrics-path/METRICS_PATH "/readyz": want a path starting with / other than /healthz and /readyz`},
		{"shutdown timeout", []string{"--shutdown-timeout", "-1s"}, nil, `invalid --shutdown-timeout/SHUTDOWN_TIMEOUT "-1s": want a duration more than 0`},
		{"token format without token", []string{"--token-format", "Bearer x"}, nil, `invalid --token-format/TOKEN_FORMAT "Bearer x": want {token} exactly once and no control characters (CR, LF)`},
		{"token format twice", nil, map[string]string{"TOKEN_FORMAT": "{token}{token}"}, `invalid --token-format/TOKEN_FORMAT "{token}{token}": want {token} exactly once`},
		{"token format CRLF", nil, map[string]string{"TOKEN_FORMAT": "Bearer {token}\r\nX-Evil: 1"}, `invalid --token-format/TOKEN_FORMAT "Bearer {token}\r\nX-Evil: 1": want {token} exactly once and no control characters (CR, LF)`},
		{"token format empty", []string{"--token-format", ""}, nil, `invalid --token-format/TOKEN_FORMAT "": want {token} exactly once`},
		{"token header bad", []string{"--token-header", "X Api"}, nil, `invalid --token-header/TOKEN_HEADER "X Api": want an HTTP header name`},
		{"token header empty", []string{"--token-header", ""}, nil, `invalid --token-header/TOKEN_HEADER "": want an HTTP header name`},
		{"token header is host header", []string{"--token-header", "x-upstream-host"}, nil, `invalid --token-header/TOKEN_HEADER "x-upstream-host": want a header other than --host-header/HOST_HEADER`},
		{"token header hop by hop", nil, map[string]string{"TOKEN_HEADER": "Proxy-Authorization"}, `invalid --token-header/TOKEN_HEADER "Proxy-Authorization": want a header that the proxy or HTTP does not manage itself`},
		{"token header host", []string{"--token-header", "host"}, nil, `invalid --token-header/TOKEN_HEADER "host": want a header that the proxy or HTTP does not manage itself`},
		{"shutdown delay negative", []string{"--shutdown-delay", "-1s"}, nil, `invalid --shutdown-delay/SHUTDOWN_DELAY "-1s": want a duration from 0s to 5m0s`},
		{"shutdown delay too long", nil, map[string]string{"SHUTDOWN_DELAY": "5h"}, `invalid --shutdown-delay/SHUTDOWN_DELAY "5h": want a duration from 0s to 5m0s`},
		{"shutdown delay no unit", []string{"--shutdown-delay", "5"}, nil, `invalid --shutdown-delay/SHUTDOWN_DELAY "5": want a duration`},
		{"local sts env", nil, map[string]string{"LOCAL_STS": "yes"}, `invalid --local-sts/LOCAL_STS "yes": want true or false`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := parseConfig(tc.args, envOf(tc.env))
			require.Error(t, err, "config = %+v", c)
			assert.Contains(t, err.Error(), tc.want)
			var ue *usageError
			assert.ErrorAs(t, err, &ue)
		})
	}
}

func TestParseConfigTLS(t *testing.T) {
	t.Parallel()
	cert, key := writeSelfSigned(t, t.TempDir())
	c, err := parseConfig([]string{"--tls-cert", cert}, envOf(map[string]string{"TLS_KEY": key}))
	require.NoError(t, err)
	require.NotNil(t, c.tlsCert)
}

// TestRunExitCodes checks run's exit codes and output for the paths that
// need no network: usage errors, help and version.
func TestRunExitCodes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		args       []string
		env        map[string]string
		code       int
		wantStdout string
		wantStderr []string
	}{
		{"bad duration", []string{"--token-duration", "2h"}, nil, 2, "",
			[]string{`stsproxy: invalid --token-duration/TOKEN_DURATION "2h": want 60s to 1h` + "\nRun 'stsproxy --help' for usage.\n"}},
		{"bad env", nil, map[string]string{"UPSTREAM_SCHEME": "gopher"}, 2, "",
			[]string{`stsproxy: invalid --upstream-scheme/UPSTREAM_SCHEME "gopher": want http or https` + "\nRun 'stsproxy --help' for usage.\n"}},
		{"unknown flag", []string{"--bogus"}, nil, 2, "",
			[]string{"stsproxy: unknown flag --bogus\nRun 'stsproxy --help' for usage.\n"}},
		{"help", []string{"--help"}, nil, 0, "Usage: stsproxy", nil},
		{"version", []string{"--version"}, nil, 0, "stsproxy ", nil},
		{"version subcommand", []string{"version"}, map[string]string{"UPSTREAM_SCHEME": "gopher"}, 0, "stsproxy ", nil},
		{"version help", []string{"version", "--help"}, nil, 0, "Usage: stsproxy version", nil},
		{"version subcommand argument", []string{"version", "--short"}, nil, 2, "",
			[]string{"stsproxy: version: unknown flag --short\nRun 'stsproxy version --help' for usage.\n"}},
		{"token without audience", []string{"token"}, nil, 2, "",
			[]string{"stsproxy: token: missing --token-audience/TOKEN_AUDIENCE: want 1 to 10 audience values\nRun 'stsproxy token --help' for usage.\n"}},
		{"token bad flag", []string{"token", "--token-duration", "1s"}, nil, 2, "",
			[]string{`stsproxy: token: invalid --token-duration/TOKEN_DURATION "1s": want 60s to 1h` + "\nRun 'stsproxy token --help' for usage.\n"}},
		{"token rejects a proxy flag", []string{"token", "--listen-addr", ":1", "--token-audience", "a"}, nil, 2, "",
			[]string{"stsproxy: token: unknown flag --listen-addr: stsproxy token does not take it\nRun 'stsproxy token --help' for usage.\n"}},
		{"token help", []string{"token", "--help"}, nil, 0, "Usage: stsproxy token --token-audience AUD", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tc.args, envOf(tc.env), &stdout, &stderr)
			assert.Equal(t, tc.code, code, "stderr: %s", stderr.String())
			if tc.wantStdout != "" {
				assert.Contains(t, stdout.String(), tc.wantStdout)
			} else {
				assert.Empty(t, stdout.String())
			}
			for _, w := range tc.wantStderr {
				assert.Equal(t, w, stderr.String())
			}
			if tc.wantStderr == nil {
				assert.Empty(t, stderr.String())
			}
		})
	}
}

// TestTokenCommandFlags checks that "stsproxy token" takes, lists and
// validates only the flags it uses.
func TestTokenCommandFlags(t *testing.T) {
	t.Parallel()
	var help bytes.Buffer
	writeCommandUsage(&help, tokenCommand)
	for _, s := range flagSpecs {
		if slices.Contains(tokenCommand.flags, s.name) {
			assert.Contains(t, help.String(), "--"+s.name+" ", s.name)
		} else {
			assert.NotContains(t, help.String(), "--"+s.name+" ", s.name)
		}
	}
	for _, name := range tokenCommand.flags {
		assert.True(t, slices.ContainsFunc(flagSpecs, func(s flagSpec) bool { return s.name == name }), "token takes unknown flag %s", name)
	}

	// Environment variables of flags token does not use are ignored, even
	// invalid ones; those of flags it uses are validated.
	env := map[string]string{"UPSTREAM_SCHEME": "gopher", "LISTEN_ADDR": "x", "METRICS_PATH": "nope", "TLS_CERT": "/nonexistent", "TOKEN_AUDIENCE": "a,b"}
	c, err := parseCommandConfig(tokenCommand, nil, envOf(env))
	require.NoError(t, err)
	assert.Equal(t, []string{"a", "b"}, c.audience.Values())
	env["TOKEN_DURATION"] = "2h"
	_, err = parseCommandConfig(tokenCommand, nil, envOf(env))
	assert.ErrorContains(t, err, "invalid --token-duration/TOKEN_DURATION")
}

// TestLogTokenSettings checks the effective refresh skew is logged, with the
// rule when the default was halved.
func TestLogTokenSettings(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{nil, []string{"duration=1h0m0s refresh_skew=5m0s signing_algorithm=RS256 audience=\"<scheme>://<host> of each request's upstream (no --token-audience/TOKEN_AUDIENCE: derived per request)\"\n"}},
		{[]string{"--token-duration", "2m"}, []string{"duration=2m0s refresh_skew=1m0s", `refresh_skew_rule="default 5m does not fit --token-duration: half the duration"`}},
		{[]string{"--token-duration", "2m", "--token-refresh-skew", "30s"}, []string{"duration=2m0s refresh_skew=30s signing_algorithm=RS256 audience="}},
	} {
		c, err := parseConfig(tc.args, envOf(nil))
		require.NoError(t, err)
		var buf bytes.Buffer
		logTokenSettings(slog.New(slog.NewTextHandler(&buf, nil)), c)
		for _, w := range tc.want {
			assert.Contains(t, buf.String(), w, "args %v", tc.args)
		}
	}
}

func TestFlagSpecsHaveEnv(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for _, s := range flagSpecs {
		env := s.env()
		assert.Regexp(t, `^[A-Z][A-Z_]*$`, env, s.name)
		assert.False(t, seen[env], "duplicate env %s", env)
		seen[env] = true
	}
	assert.Equal(t, "UPSTREAM_HOST", flagSpec{name: "upstream-host"}.env())
	assert.Equal(t, "TOKEN_TAGS", flagSpec{name: "token-tag"}.env())
}

// writeSelfSigned writes a self-signed certificate for 127.0.0.1 and its
// key to dir, returning the two paths.
func writeSelfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "stsproxy test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:     []string{"localhost"},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	require.NoError(t, err)
	keyDER, err := x509.MarshalPKCS8PrivateKey(priv)
	require.NoError(t, err)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600))
	return certFile, keyFile
}
