package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// viaPattern matches the Via entry stsproxy adds to outbound requests.
var viaPattern = regexp.MustCompile(`^1\.1 stsproxy-[0-9a-f]{8}$`)

// TestE2ELoopGuards routes by the Host line and checks that a request
// naming the proxy itself, or carrying the proxy's own Via entry, is
// answered 508 and never forwarded.
func TestE2ELoopGuards(t *testing.T) {
	t.Parallel()
	sts := newSTS(t)
	up := newRecordingUpstream(t, nil)
	p := startProxy(t, sts, "--host-header", "Host")
	c := testClient(t)
	_, port, ok := strings.Cut(p.addr, ":")
	require.True(t, ok, p.addr)

	status, body := get(t, c, "http://"+p.addr+"/", nil) // Host is the proxy's own address
	assert.Equal(t, http.StatusLoopDetected, status)
	assert.Equal(t, "loop detected: Host names this proxy's own address; set it to the upstream host\n", body)
	for _, h := range []string{"localhost:" + port, "[::1]:" + port, "0.0.0.0:" + port} {
		status, body = getWithHost(t, c, "http://"+p.addr+"/", h, nil)
		assert.Equal(t, http.StatusLoopDetected, status, h)
		assert.Contains(t, body, "loop detected", h)
	}
	_, hits := up.lastRequest()
	assert.Zero(t, hits)

	status, body = getWithHost(t, c, "http://"+p.addr+"/", up.host(), map[string]string{"Via": "1.0 corp-gateway"})
	require.Equal(t, http.StatusOK, status, body)
	r, _ := up.lastRequest()
	vias := r.Header.Values("Via")
	require.Len(t, vias, 2, "Via = %q", vias)
	assert.Equal(t, "1.0 corp-gateway", vias[0])
	assert.Regexp(t, viaPattern, vias[1])

	// The request comes back, as through an upstream that forwards to the
	// proxy: 508, and the upstream is not called again.
	status, body = getWithHost(t, c, "http://"+p.addr+"/", up.host(), map[string]string{"Via": strings.Join(vias, ", ")})
	assert.Equal(t, http.StatusLoopDetected, status)
	assert.Equal(t, "loop detected: the request already passed through this proxy (Via: "+vias[1]+")\n", body)
	_, hits = up.lastRequest()
	assert.Equal(t, 1, hits)
	p.waitLog(t, `"msg":"loop detected: request already passed through this proxy"`)
}

// getWithHost sends a GET with the given headers, and with the request's
// Host line set to host unless it is empty, and returns the status and body.
func getWithHost(t *testing.T, c *http.Client, url, host string, hdr map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	require.NoError(t, err)
	if host != "" {
		req.Host = host
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := c.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res.StatusCode, string(b)
}

// rawRoundTrip writes req verbatim on a new connection to addr and reads
// one response, so the test controls every byte, CR and LF included.
func rawRoundTrip(t *testing.T, addr, req string) (int, string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, waitTimeout)
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(waitTimeout)))
	_, err = io.WriteString(conn, req)
	require.NoError(t, err)
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res.StatusCode, string(b)
}

// TestE2EBadInput sends malformed requests to the built binary: each gets a
// 4xx whose body gives the reason, nothing reaches the upstream, and the
// process keeps serving.
func TestE2EBadInput(t *testing.T) {
	t.Parallel()
	sts := newSTS(t)
	up := newRecordingUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "method="+r.Method)
	})
	byHeader := startProxy(t, sts)
	byHost := startProxy(t, sts, "--host-header", "Host")
	req := func(method, host, extra string) string {
		return method + " /x HTTP/1.1\r\nHost: " + host + "\r\n" + extra + "\r\n"
	}
	route := func(v string) string { return req("GET", "proxy", "X-Upstream-Host: "+v+"\r\n") }
	// net/http refuses some requests before the handler runs. For a bad
	// Host line it gives the reason; for a malformed request line, method
	// or header bytes it answers a bare "400 Bad Request" and closes, and
	// the proxy has no hook to add one.
	const netHTTP = "400 Bad Request: "
	const bare = "400 Bad Request"
	const ours = "invalid X-Upstream-Host header: "
	tests := []struct {
		name   string
		p      *proc
		raw    string
		status int
		body   string // prefix of the body
	}{
		{"empty header", byHeader, route(""), 400, "missing X-Upstream-Host header"},
		{"two headers", byHeader, req("GET", "proxy", "X-Upstream-Host: "+up.host()+"\r\nX-Upstream-Host: "+up.host()+"\r\n"), 400, "more than one X-Upstream-Host header"},
		{"space", byHeader, route("a b.example"), 400, ours + "contains white space"},
		{"tab", byHeader, route("a\tb.example"), 400, ours + "contains a control character"},
		{"path", byHeader, route(up.host() + "/p"), 400, ours + "must not include a path"},
		{"scheme", byHeader, route("http://" + up.host()), 400, ours + "must not include a scheme"},
		{"userinfo", byHeader, route("user:pw@" + up.host()), 400, ours + "must not include userinfo"},
		{"query", byHeader, route(up.host() + "?q"), 400, ours + "must not include a query"},
		{"bare CR", byHeader, route("127.0.0.1\r:1"), 400, bare},
		{"NUL", byHeader, route("127.0.0.1\x00"), 400, bare},
		{"DEL", byHeader, route("127.0.0.1\x7f"), 400, bare},
		{"obs-fold", byHeader, route("127.0.0.1\r\n :1"), 400, ours + "contains white space"},
		{"10 KB", byHeader, route(strings.Repeat("a", 10<<10)), 400, ours + "longer than 260 characters"},
		{"port 0", byHeader, route("127.0.0.1:0"), 400, ours + `port "0", want a number from 1 to 65535`},
		{"port too big", byHeader, route("127.0.0.1:65536"), 400, ours + `port "65536"`},
		{"port name", byHeader, route("127.0.0.1:http"), 400, ours + `port "http"`},
		{"unbalanced IPv6", byHeader, route("[::1"), 400, ours + "unbalanced IPv6 brackets"},
		{"bare IPv6", byHeader, route("::1"), 400, ours + "IPv6 address must be in brackets"},
		{"non-ASCII", byHeader, route("\xc3\xa9.example"), 400, ours + "contains a non-ASCII character"},
		{"metadata", byHeader, route("169.254.169.254"), 403, `upstream host "169.254.169.254" is a link-local or instance metadata address`},
		{"oversize headers", byHeader, req("GET", "proxy", "X-Big: "+strings.Repeat("b", maxHeaderBytes+8<<10)+"\r\n"), 431, "431 Request Header Fields Too Large"},
		{"invalid method", byHeader, "GE(T /x HTTP/1.1\r\nHost: proxy\r\nX-Upstream-Host: " + up.host() + "\r\n\r\n", 400, bare},
		{"no Host line", byHeader, "GET /x HTTP/1.1\r\nX-Upstream-Host: " + up.host() + "\r\n\r\n", 400, netHTTP + "missing required Host header"},
		{"bad request line", byHeader, "GET /x\r\n\r\n", 400, bare},
		{"Host empty", byHost, req("GET", "", ""), 400, "missing Host header"},
		{"Host space", byHost, req("GET", "a b.example", ""), 400, netHTTP + "malformed Host header"},
		{"Host path", byHost, req("GET", up.host()+"/p", ""), 400, netHTTP + "malformed Host header"},
		{"Host userinfo", byHost, req("GET", "u@"+up.host(), ""), 400, netHTTP + "malformed Host header"},
		{"Host CR", byHost, req("GET", "127.0.0.1\r:1", ""), 400, bare},
		{"Host 10 KB", byHost, req("GET", strings.Repeat("a", 10<<10), ""), 400, "invalid Host header: longer than 260 characters"},
		{"Host bad port", byHost, req("GET", "127.0.0.1:99999", ""), 400, `invalid Host header: port "99999"`},
		{"Host unbalanced IPv6", byHost, req("GET", "[::1", ""), 400, "invalid Host header: unbalanced IPv6 brackets"},
		{"Host two ports", byHost, req("GET", "127.0.0.1:1:2", ""), 400, "invalid Host header: "},
	}
	for _, tc := range tests {
		status, body := rawRoundTrip(t, tc.p.addr, tc.raw)
		assert.Equal(t, tc.status, status, "%s: body %q", tc.name, body)
		if tc.body == bare {
			assert.Equal(t, bare, body, tc.name)
			continue
		}
		assert.True(t, strings.HasPrefix(body, tc.body), "%s: body %q, want prefix %q", tc.name, body, tc.body)
		assert.Greater(t, len(strings.TrimSpace(body)), len(bare), "%s: body %q gives no reason", tc.name, body)
	}
	_, hits := up.lastRequest()
	assert.Zero(t, hits, "a bad request reached the upstream")

	// Any token-valid method is forwarded, as by httputil.ReverseProxy.
	status, body := rawRoundTrip(t, byHeader.addr, req("FROBNICATE", "proxy", "X-Upstream-Host: "+up.host()+"\r\nConnection: close\r\n"))
	assert.Equal(t, http.StatusOK, status)
	assert.Equal(t, "method=FROBNICATE", body)

	// Both processes are still up and serve a good request.
	c := testClient(t)
	status, body = get(t, c, "http://"+byHeader.addr+"/good", map[string]string{"X-Upstream-Host": up.host()})
	assert.Equal(t, http.StatusOK, status)
	assert.Equal(t, "method=GET", body)
	status, body = getWithHost(t, c, "http://"+byHost.addr+"/good", up.host(), nil)
	assert.Equal(t, http.StatusOK, status)
	assert.Equal(t, "method=GET", body)
	for _, p := range []*proc{byHeader, byHost} {
		select {
		case <-p.done:
			t.Fatalf("stsproxy exited with %d; logs:\n%s", p.exitCode, p.logs.String())
		default:
		}
		assert.NotContains(t, p.logs.String(), "panic")
	}
}
