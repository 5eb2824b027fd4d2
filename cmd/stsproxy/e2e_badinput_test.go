package main

import (
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"

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

// getWithHost is get with the request's Host line set to host.
func getWithHost(t *testing.T, c *http.Client, url, host string, hdr map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	require.NoError(t, err)
	req.Host = host
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
