package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"go.uber.org/goleak"
)

// metricSum returns the sum of every sample of a Prometheus metric in an
// exposition.
func metricSum(exposition, name string) float64 {
	var sum float64
	sc := bufio.NewScanner(strings.NewReader(exposition))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		if v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64); err == nil {
			sum += v
		}
	}
	return sum
}

// TestRunLoadAcrossRefreshAndShutdown runs the whole program in-process
// under concurrent load, across background token refreshes (60 s tokens
// refreshed 58 s before expiry, so within about 2 s) and cache evictions
// (three host-derived audiences, two cache slots), then cancels run's
// context while the load is still running. Run with -race: the detector
// checks the concurrency; the test checks that every request before the
// shutdown got 200, that during it only 200, 502, 503 or a refused
// connection happened, that run returned 0 and that no goroutine is left.
func TestRunLoadAcrossRefreshAndShutdown(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	var upstreams []string
	for _, ip := range []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"} {
		ln, err := net.Listen("tcp", ip+":0")
		if err != nil {
			t.Skipf("cannot listen on %s (loopback aliases are a Linux default): %v", ip, err)
		}
		up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
				http.Error(w, "no token", http.StatusUnauthorized)
				return
			}
			io.WriteString(w, "ok")
		}))
		up.Listener.Close()
		up.Listener = ln
		up.Start()
		defer up.Close()
		upstreams = append(upstreams, ln.Addr().String())
	}

	addr, metricsAddr, logs, stop := startRun(t,
		"--token-duration", "60s", "--token-refresh-skew", "58s", "--token-cache-size", "2",
		"--allowed-hosts", "127.0.0.1,127.0.0.2,127.0.0.3", "--shutdown-timeout", "5s")
	c := &http.Client{Timeout: waitTimeout, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	defer c.CloseIdleConnections()

	const (
		workers      = 8
		maxPerWorker = 20000
	)
	type outcome struct {
		status   int   // 0 if err
		err      error // transport error
		shutdown bool  // sent after the context was cancelled
	}
	var cancelled, finished atomic.Bool
	var served atomic.Int64 // 200s so far, so the load runs until there are enough
	results := make([][]outcome, workers)
	deadline := time.Now().Add(waitTimeout)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := 0; i < maxPerWorker && !finished.Load() && time.Now().Before(deadline); i++ {
				shutdown := cancelled.Load()
				req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/load", nil)
				if err != nil {
					results[w] = append(results[w], outcome{err: err, shutdown: shutdown})
					return
				}
				req.Header.Set("X-Upstream-Host", upstreams[(w+i)%len(upstreams)])
				res, err := c.Do(req)
				if err != nil {
					results[w] = append(results[w], outcome{err: err, shutdown: shutdown || cancelled.Load()})
					continue
				}
				_, err = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if err == nil && res.StatusCode == http.StatusOK {
					served.Add(1)
				}
				results[w] = append(results[w], outcome{status: res.StatusCode, err: err, shutdown: shutdown || cancelled.Load()})
			}
		})
	}

	// Keep the load up for at least minLoad, past the refresh time of every
	// token minted at the start (2 s after minting), and until the metrics
	// show a token served inside its refresh window and an eviction, and
	// minServed requests got 200: a busy machine makes the load last longer,
	// it does not fail the test.
	const (
		minLoad   = 2500 * time.Millisecond
		minServed = 100
	)
	var stale, evicted float64
	for start := time.Now(); time.Now().Before(deadline); {
		status, body := fetch(c, "http://"+metricsAddr+"/metrics")
		if status == http.StatusOK {
			stale = metricSum(body, "token_stale_served_count_total")
			evicted = metricSum(body, "token_cache_eviction_count_total")
			if stale > 0 && evicted > 0 && time.Since(start) >= minLoad && served.Load() >= minServed {
				break
			}
		}
		time.Sleep(50 * time.Millisecond) // poll interval, bounded by the deadline
	}
	cancelled.Store(true)
	code := stop()
	finished.Store(true)
	wg.Wait()

	assert.Equal(t, 0, code)
	assert.Positive(t, stale, "no token was served inside its refresh window")
	assert.Positive(t, evicted, "no audience set was evicted")
	var ok, total, refused, clean int
	for _, rs := range results {
		for _, r := range rs {
			total++
			switch {
			case r.err == nil && r.status == http.StatusOK:
				ok++
			case !r.shutdown:
				t.Errorf("before shutdown: status %d, error %v", r.status, r.err)
			case r.err != nil:
				refused++ // the listener is closed: refused, reset or EOF
			case r.status != http.StatusBadGateway && r.status != http.StatusServiceUnavailable:
				t.Errorf("during shutdown: status %d", r.status)
			default:
				clean++
			}
		}
	}
	t.Logf("%d requests: %d OK, %d 502/503 and %d connection errors during shutdown; stale served %v, evictions %v",
		total, ok, clean, refused, stale, evicted)
	assert.GreaterOrEqual(t, ok, minServed)
	assert.NotContains(t, logs.String(), "panic")
}

// fetch GETs url and returns the status and body, or 0 on error.
func fetch(c *http.Client, url string) (int, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, fmt.Sprint(err)
	}
	res, err := c.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}
