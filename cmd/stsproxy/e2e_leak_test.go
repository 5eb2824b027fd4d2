package main

import (
	"net/http"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// jwtPattern matches a compact JWS, as any token the proxy handles is.
var jwtPattern = regexp.MustCompile(`eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+`)

// TestE2ENoTokenLeaks runs the binary at debug level through success,
// token failure, a replaced inbound Authorization, bad requests and a
// metrics scrape, then scans everything it wrote and every body a client
// received for a JWT. The upstream answers a fixed body, so the scanned
// set holds only what the proxy itself produced.
func TestE2ENoTokenLeaks(t *testing.T) {
	t.Parallel()
	sts := newSTS(t)
	up := newRecordingUpstream(t, nil) // answers "upstream ok", never echoes
	p := startProxy(t, sts, "--log-level", "debug", "--token-tag", "team=core")
	c := testClient(t)
	base := "http://" + p.addr
	var scanned []string
	send := func(name string, hdr map[string]string, want int) {
		t.Helper()
		status, body := get(t, c, base+"/"+name, hdr)
		assert.Equal(t, want, status, "%s: %s", name, body)
		scanned = append(scanned, body)
	}
	// An inbound bearer that looks like a JWT, to be replaced, never logged.
	inbound := "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjbGllbnQifQ.c2lnbmF0dXJl"

	// Tokens flow.
	for range 3 {
		send("ok", map[string]string{"X-Upstream-Host": up.host()}, http.StatusOK)
	}
	send("replaced", map[string]string{"X-Upstream-Host": up.host(), "Authorization": "Bearer " + inbound}, http.StatusOK)
	r, hits := up.lastRequest()
	require.Equal(t, 4, hits)
	minted := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	require.Regexp(t, jwtPattern, minted, "the scan would not recognise a real token")

	// No token: a fresh audience (localhost) while STS refuses.
	_, port, _ := strings.Cut(up.host(), ":")
	sts.FailAll("AccessDenied")
	send("denied", map[string]string{"X-Upstream-Host": "localhost:" + port, "Authorization": "Bearer " + inbound}, http.StatusBadGateway)
	send("cached", map[string]string{"X-Upstream-Host": up.host()}, http.StatusOK) // the cached token still serves
	sts.Reset()

	// Bad requests and refusals.
	send("bad", map[string]string{"X-Upstream-Host": "user:" + inbound + "@" + up.host()}, http.StatusBadRequest)
	send("bad", map[string]string{"X-Upstream-Host": up.host() + "/" + inbound}, http.StatusBadRequest)
	send("forbidden", map[string]string{"X-Upstream-Host": "169.254.169.254"}, http.StatusForbidden)
	send("missing", nil, http.StatusBadRequest)
	status, body := rawRoundTrip(t, p.addr, "GET /raw HTTP/1.1\r\nHost: proxy\r\nAuthorization: Bearer "+minted+"\r\nX-Upstream-Host: [::1\r\n\r\n")
	assert.Equal(t, http.StatusBadRequest, status)
	scanned = append(scanned, body)

	// The metrics scrape, then a clean stop so every log line is written.
	status, metrics := get(t, c, "http://"+p.metricsAddr+"/metrics", nil)
	require.Equal(t, http.StatusOK, status)
	assert.Contains(t, metrics, `token_result="fetch_error"`)
	scanned = append(scanned, metrics)
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	require.Equal(t, 0, p.wait(t))

	logs := p.logs.String()
	assert.Contains(t, logs, `"msg":"removing an inbound token header","header":"Authorization"`)
	assert.Contains(t, logs, `"level":"ERROR","msg":"token unavailable"`)
	assert.Contains(t, logs, "AccessDenied")
	assert.Contains(t, logs, `"level":"DEBUG"`)
	scanned = append(scanned, logs, p.stdout.String())
	for i, s := range scanned {
		assert.Empty(t, jwtPattern.FindAllString(s, -1), "JWT in output %d:\n%s", i, s)
		assert.NotContains(t, s, minted)
		assert.NotContains(t, s, "c2lnbmF0dXJl", "inbound token's signature in output %d", i)
	}
}
