package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRunRetriesAfterUnauthorized: an upstream that rejects the first token
// it sees gets the request again with a fresh one, through the library's
// Transport, and the retry is counted; the client sees 200.
func TestRunRetriesAfterUnauthorized(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		mu.Lock()
		seen = append(seen, auth)
		first := seen[0]
		mu.Unlock()
		if auth == first {
			http.Error(w, "token revoked", http.StatusUnauthorized)
			return
		}
		io.WriteString(w, "ok")
	}))
	defer up.Close()
	upHost := strings.TrimPrefix(up.URL, "http://")
	c := &http.Client{Timeout: waitTimeout, Transport: &http.Transport{}}
	defer c.CloseIdleConnections()

	addr, metricsAddr, _, stop := startRun(t, "--upstream-host", upHost, "--token-audience", "https://api.example")
	status, body := getWithHost(t, c, "http://"+addr+"/", "", nil)
	assert.Equal(t, http.StatusOK, status)
	assert.Equal(t, "ok", body)
	mu.Lock()
	require.Len(t, seen, 2)
	assert.NotEqual(t, seen[0], seen[1])
	mu.Unlock()

	status, metrics := fetch(c, "http://"+metricsAddr+"/metrics")
	require.Equal(t, http.StatusOK, status)
	assert.Equal(t, 1.0, metricSum(metrics, "token_unauthorized_retry_count_total"))
	var invalidation string
	for _, line := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(line, "token_refresh_count_total{") && strings.Contains(line, `trigger="invalidation"`) {
			invalidation = line[strings.LastIndexByte(line, ' ')+1:]
		}
	}
	assert.Equal(t, "1", invalidation, "one fetch to replace the rejected token")
	assert.Equal(t, 0, stop())
}
