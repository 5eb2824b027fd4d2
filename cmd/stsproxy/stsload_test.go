package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/stsauth/stsauth/ststest"
)

// serveWith runs the proxy in-process (serve) with the configuration of args
// (listeners on loopback ports of the system's choosing), the STS client of
// srv and, if cfgFn is not nil, whatever test seams cfgFn sets. It returns
// the proxy and admin addresses once the proxy is ready and its logs, and
// stops it at cleanup, checking that serve returned nil.
func serveWith(t *testing.T, srv *ststest.Server, cfgFn func(*config), args ...string) (addr, metricsAddr string, logs *syncBuffer) {
	t.Helper()
	args = append([]string{"--listen-addr", "127.0.0.1:0", "--metrics-listen-addr", "127.0.0.1:0", "--upstream-scheme", "http"}, args...)
	cfg, err := parseConfig(args, envOf(nil))
	require.NoError(t, err)
	cfg.sts = srv.Client()
	if cfgFn != nil {
		cfgFn(cfg)
	}
	type addrs struct{ addr, metrics string }
	ready := make(chan addrs, 1)
	cfg.onReady = func(addr, metricsAddr string) { ready <- addrs{addr, metricsAddr} }
	logs = &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, slog.New(slog.NewJSONHandler(logs, nil))) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			assert.NoError(t, err)
		case <-time.After(waitTimeout):
			t.Error("serve did not return")
		}
	})
	select {
	case a := <-ready:
		return a.addr, a.metrics, logs
	case err := <-done:
		t.Fatalf("serve returned before it was ready: %v; logs:\n%s", err, logs.String())
	case <-time.After(waitTimeout):
		t.Fatalf("the proxy was not ready; logs:\n%s", logs.String())
	}
	return "", "", nil
}

// sendTo sends a GET through the proxy at addr to the upstream host (the
// X-Upstream-Host header) and returns the status, headers and body. It
// returns errors rather than failing the test, so goroutines may call it.
func sendTo(c *http.Client, addr, host string) (int, http.Header, string, error) {
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
	if err != nil {
		return 0, nil, "", err
	}
	req.Header.Set("X-Upstream-Host", host)
	res, err := c.Do(req)
	if err != nil {
		return 0, nil, "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, res.Header, string(b), err
}

// With STS hanging and more audience sets than fetch slots, no request
// waits longer than --token-fetch-timeout for its token: the wait for a
// slot counts. Before, 40 sets through 4 slots waited a median 6 s and up
// to 10 s with a 1 s timeout, one timeout per wave of 4.
func TestFetchTimeoutBoundsEveryRequestsWait(t *testing.T) {
	t.Parallel()
	srv := ststest.NewServer()
	t.Cleanup(srv.Close)
	release := srv.Hold()
	t.Cleanup(release)
	const timeout = time.Second
	addr, _, _ := serveWith(t, srv, nil, "--allowed-hosts", "*",
		"--token-fetch-concurrency", "4", "--token-fetch-timeout", timeout.String())
	c := testClient(t)

	type result struct {
		status  int
		elapsed time.Duration
		err     error
	}
	results := make([]result, 40)
	var wg sync.WaitGroup
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// IP literals: distinct audiences, never dialled (no token).
			host := fmt.Sprintf("127.0.1.%d", i+1)
			start := time.Now()
			status, _, _, err := sendTo(c, addr, host)
			results[i] = result{status, time.Since(start), err}
		}()
	}
	wg.Wait()
	// Slop for a loaded machine running -race; one timeout per wave of 4
	// would take 10 s.
	const slop = 3 * time.Second
	for i, r := range results {
		require.NoError(t, r.err)
		assert.Equal(t, http.StatusBadGateway, r.status, "request %d", i)
		assert.Less(t, r.elapsed, timeout+slop, "request %d waited past --token-fetch-timeout", i)
	}
}
