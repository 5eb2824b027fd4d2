package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/stretchr/testify/require"
	"github.com/stsauth/stsauth"
	"go.opentelemetry.io/otel/metric/noop"
)

// FuzzHostHeader sends a request with a fuzzed upstream host, as the
// X-Upstream-Host header or as the Host line, through the proxy handler
// with a fake upstream transport. The handler must not panic, must answer
// one of its documented statuses, and may forward only a host[:port] that
// stsauth.SplitHostPort accepts, holds no control character, white space,
// '/', '\\', '@', '?' or '#', and makes a URL whose host is exactly it.
func FuzzHostHeader(f *testing.F) {
	for _, s := range []string{
		"api.example.com", "API.Example.com:8443", "127.0.0.1", "127.0.0.1:9000", "[::1]", "[2001:db8::1]:443",
		"a_b.example", "x.example.", "", " ", "x .example", "x\t.example", "x\r\nInjected: 1", "x\x00", "é.example",
		"https://x.example", "x.example/p", `x.example\p`, "x.example?q", "x.example#f", "u:p@x.example",
		"x.example:", "x.example:0", "x.example:65536", "x.example:080", "x.example:+80", ":80", "[::1", "::1]",
		"::1", "[::1]x", "[::1]:", "[127.0.0.1]", "[fe80::1%eth0]", "a..b", ".a", "a*b", strings.Repeat("a", 256),
		"169.254.169.254", "169.254.169.254.", "[fd00:ec2::254]:80", "instance-data.ec2.internal", "[ff02::1]",
		"localhost:8080", "LOCALHOST.:8080", "0.0.0.0:8080", "[::ffff:127.0.0.1]:8080", "[::ffff:169.254.169.254]",
		"2852039166", "0xa9fea9fe:80", "0251.0376.0251.0376", "169.254.43518", "[fd00:ec2::23]", "metadata.google.internal",
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	// The fake upstream answers 204 and reports the host it was sent to.
	rt := roundTripperFunc(func(out *http.Request) (*http.Response, error) {
		h := http.Header{}
		h.Set("X-Got-Host", out.URL.Host)
		h.Set("X-Got-Host-Line", out.Host)
		return &http.Response{StatusCode: http.StatusNoContent, Body: http.NoBody, Header: h, Request: out}, nil
	})
	byHeader := newTestProxy(f, rt, "--upstream-scheme", "http")
	byHost := newTestProxy(f, rt, "--upstream-scheme", "http", "--host-header", "Host")

	f.Fuzz(func(t *testing.T, v string, hostLine bool) {
		r := arrivedOn(httptest.NewRequest(http.MethodGet, "http://proxy.internal/p", nil), "127.0.0.1:8080")
		p, name := byHeader, "X-Upstream-Host"
		if hostLine {
			p, name = byHost, "Host"
			r.Host = v
		} else {
			r.Header.Set(name, v)
		}
		w := httptest.NewRecorder()
		p.ServeHTTP(w, r)
		body := w.Body.String()
		require.False(t, strings.ContainsAny(strings.TrimSuffix(body, "\n"), "\r\n"), "body %q spans lines", body)
		_, _, checkErr := stsauth.ParseHostPort(v)

		switch w.Code {
		case http.StatusNoContent:
			require.NoError(t, checkErr, "forwarded %q", v)
			_, _, err := stsauth.SplitHostPort(v)
			require.NoError(t, err, "forwarded %q", v)
			require.LessOrEqual(t, len(v), 260)
			for i := 0; i < len(v); i++ {
				c := v[i]
				require.False(t, c <= ' ' || c >= 0x7f || strings.IndexByte(`/\@?#`, c) >= 0, "forwarded %q holding %q", v, c)
			}
			got := w.Header().Get("X-Got-Host")
			require.Equal(t, strings.ToLower(v), got)
			require.Equal(t, "", w.Header().Get("X-Got-Host-Line"), "outbound Host line must follow the URL")
			u, err := url.Parse("http://" + got + "/p")
			require.NoError(t, err, "forwarded %q makes a bad URL", v)
			require.Equal(t, got, u.Host)
			require.False(t, metadataTarget(got))
		case http.StatusBadRequest:
			require.True(t, v == "" || checkErr != nil, "refused valid %q: %s", v, body)
			require.True(t, strings.HasPrefix(body, "invalid "+name+" header: ") || body == "missing "+name+" header\n", "body %q", body)
		case http.StatusForbidden:
			require.NoError(t, checkErr)
			require.True(t, metadataTarget(strings.ToLower(v)), "forbade %q", v)
		case http.StatusLoopDetected:
			require.NoError(t, checkErr)
			require.True(t, isSelf(r, strings.ToLower(v)), "loop for %q", v)
		default:
			t.Fatalf("status %d for %q: %s", w.Code, v, body)
		}
	})
}

// flagError matches the messages a configuration error may have: ours,
// naming the flag and its env var, and the flag package's, naming the
// argument it could not parse.
var flagError = regexp.MustCompile(`^(invalid --([a-z-]+)(?:/([A-Z_]+))? "|unknown flag --|flag --[a-z-]+ needs a value$|bad flag syntax: |unexpected argument ")`)

// FuzzConfig feeds fuzzed arguments and environment values (each list
// NUL-separated, as NUL cannot occur in either) to the configuration
// parser. It must not panic; it returns either a valid config or a
// *usageError that names a flag, and loadConfig turns that error into exit
// code 2 with a pointer to --help. TLS_CERT/TLS_KEY and --tls-* arguments are left out:
// they name files to read, and a fuzzer must not read /dev/zero.
func FuzzConfig(f *testing.F) {
	seeds := [][2]string{
		{"", ""},
		{"--upstream-host\x00api.example.com:8443", "UPSTREAM_SCHEME=http"},
		{"--token-duration=90s\x00--token-refresh-skew\x0030s", "TOKEN_AUDIENCE=a,b"},
		{"-host-header\x00Host\x00--allowed-hosts\x00*.example.com:443,x", "LOG_LEVEL=debug"},
		{"--token-tag\x00a=b\x00--token-tag\x00a=c", "TOKEN_TAGS=k=v,=x"},
		{"--metrics-enabled=maybe", "METRICS_ENABLED=false"},
		{"--nope", ""},
		{"serve", ""},
		{"--listen-addr", ""},
		{"---x", ""},
		{"--help", ""},
		{"--version\x00--token-duration\x002h", "VERSION=x"},
		{"--token-cache-size\x00-1", "TOKEN_CACHE_SIZE=many"},
		{"--metrics-path\x00/readyz", "LISTEN_ADDR=:9090\x00METRICS_LISTEN_ADDR=:9090"},
		{"--upstream-host\x00169.254.169.254", "ALLOWED_HOSTS=a,,b"},
		{"--token-audience\x00 \x00--token-audience\x00\u2028", "TOKEN_AUDIENCE=1,2,3,4,5,6,7,8,9,10,11"},
		{"--shutdown-timeout\x00-1s\x00--upstream-timeout\x000", "LOCAL_STS=yes"},
		{"--token-signing-algorithm\x00ES384", "TOKEN_DURATION=3600.5s"},
	}
	for _, s := range seeds {
		f.Add(s[0], s[1])
	}
	specNames := make(map[string]string, len(flagSpecs))
	for _, s := range flagSpecs {
		specNames[s.name] = s.env()
	}
	f.Fuzz(func(t *testing.T, argList, envList string) {
		var args []string
		if argList != "" {
			args = strings.Split(argList, "\x00")
		}
		if slices.ContainsFunc(args, func(a string) bool { return strings.Contains(a, "tls") }) {
			t.Skip("--tls-* reads files")
		}
		env := map[string]string{}
		for kv := range strings.SplitSeq(envList, "\x00") {
			if k, v, ok := strings.Cut(kv, "="); ok && k != "TLS_CERT" && k != "TLS_KEY" {
				env[k] = v
			}
		}
		getenv := func(k string) string { return env[k] }

		c, err := parseConfig(args, getenv)
		var stdout, stderr bytes.Buffer
		lc, code := loadConfig(proxyCommand, args, getenv, &stdout, &stderr)
		switch {
		case errors.Is(err, flag.ErrHelp):
			require.Nil(t, c)
			require.Nil(t, lc)
			require.Equal(t, 0, code)
			require.Contains(t, stdout.String(), "Usage: stsproxy")
			return
		case err != nil:
			require.Nil(t, c)
			var ue *usageError
			require.ErrorAs(t, err, &ue)
			m := flagError.FindStringSubmatch(err.Error())
			require.NotNil(t, m, "error names no flag: %q", err.Error())
			if m[2] != "" && m[3] != "" {
				require.Equal(t, specNames[m[2]], m[3], "error names an unknown flag: %q", err.Error())
			}
			require.Nil(t, lc)
			require.Equal(t, 2, code)
			require.Empty(t, stdout.String())
			require.Equal(t, "stsproxy: "+err.Error()+"\nRun 'stsproxy --help' for usage.\n", stderr.String())
			return
		}
		require.NotNil(t, c)
		require.NotNil(t, lc)
		require.Equal(t, 0, code)
		if c.version {
			return
		}
		require.Contains(t, []string{"http", "https"}, c.upstreamScheme)
		require.True(t, c.duration >= stsauth.MinDuration && c.duration <= stsauth.MaxDuration, "duration %v", c.duration)
		require.True(t, c.refreshSkew > 0 && c.refreshSkew < c.duration, "skew %v duration %v", c.refreshSkew, c.duration)
		require.GreaterOrEqual(t, c.cacheSize, 1)
		require.Positive(t, c.upstreamTimeout)
		require.Positive(t, c.shutdownTimeout)
		require.True(t, strings.HasPrefix(c.metricsPath, "/"))
		require.True(t, validHeaderName(c.hostHeader))
		require.NotEqual(t, "Authorization", c.hostHeader)
		if c.upstreamHost != "" {
			_, _, err := stsauth.ParseHostPort(c.upstreamHost)
			require.NoError(t, err)
			require.False(t, metadataTarget(c.upstreamHost))
			if c.allowed != nil {
				require.True(t, c.allowed.AllowsURLHost(c.upstreamScheme, c.upstreamHost))
			}
		}
		if len(c.audiences) > 0 {
			_, err := stsauth.NewAudience(c.audiences...)
			require.NoError(t, err)
		}
		ts, err := newTokenSource(c, unusedSTS{}, noop.NewMeterProvider(), slog.New(slog.DiscardHandler))
		require.NoError(t, err, "a valid config is rejected by the library")
		require.NoError(t, ts.Close())
	})
}

// unusedSTS is an STS client that is never called.
type unusedSTS struct{}

func (unusedSTS) GetWebIdentityToken(context.Context, *sts.GetWebIdentityTokenInput, ...func(*sts.Options)) (*sts.GetWebIdentityTokenOutput, error) {
	return nil, errors.New("unusedSTS called")
}

// metadataTarget reports whether a host[:port] names a host
// stsauth.IsMetadataHost refuses.
func metadataTarget(hostport string) bool {
	h, _, err := stsauth.SplitHostPort(hostport)
	if err != nil {
		h = hostport
	}
	return stsauth.IsMetadataHost(h)
}
