package main

import (
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestE2ETokenHeaderAndFormat runs the binary with --token-header and
// --token-format against an upstream that reads the token from X-Api-Token
// with a tenant prefix and rejects the first one it sees: the client's own
// Authorization and X-Api-Token never arrive, the token comes in the
// configured header and format, and the 401 retry replaces it there.
func TestE2ETokenHeaderAndFormat(t *testing.T) {
	t.Parallel()
	const prefix = "Bearer tenant-a:"
	type seen struct{ token, auth string }
	var (
		mu  sync.Mutex // guards got
		got []seen
	)
	up := newRecordingUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, seen{r.Header.Get("X-Api-Token"), r.Header.Get("Authorization")})
		first := len(got) == 1
		mu.Unlock()
		if first {
			http.Error(w, "token revoked", http.StatusUnauthorized)
			return
		}
		w.Write([]byte("upstream ok"))
	})
	sts := newSTS(t)
	p := startProxy(t, sts, "--upstream-host", up.host(), "--token-audience", "https://api.example",
		"--token-header", "x-api-token", "--token-format", prefix+"{token}")
	status, body := get(t, testClient(t), "http://"+p.addr+"/", map[string]string{
		"Authorization": "Bearer inbound-secret", "X-Api-Token": "inbound-token",
	})
	require.Equal(t, http.StatusOK, status, body)

	mu.Lock()
	defer mu.Unlock()
	require.Len(t, got, 2, "the rejected request and its retry")
	for _, s := range got {
		assert.Empty(t, s.auth, "the client's Authorization reached the upstream")
		require.True(t, strings.HasPrefix(s.token, prefix), "X-Api-Token %.20q... lacks the format's prefix", s.token)
	}
	assert.NotEqual(t, got[0].token, got[1].token, "the retry re-sent the rejected token")
	aud, _ := verifyJWT(t, sts, strings.TrimPrefix(got[1].token, prefix))
	assert.Equal(t, jwt.Audience{"https://api.example"}, aud)
	p.waitLog(t, `"token_header":"X-Api-Token","token_format":"Bearer tenant-a:{token}"`)
	assert.NotContains(t, p.logs.String(), "inbound-secret")
	assert.NotContains(t, p.logs.String(), "inbound-token")
}
