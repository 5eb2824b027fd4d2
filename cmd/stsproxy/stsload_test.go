package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/stsauth/stsauth"
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
	// takes up to 10 s, half the requests more than 6 s.
	const slop = 5 * time.Second
	for i, r := range results {
		require.NoError(t, r.err)
		assert.Equal(t, http.StatusBadGateway, r.status, "request %d", i)
		assert.Less(t, r.elapsed, timeout+slop, "request %d waited past --token-fetch-timeout", i)
	}
}

// Routed by a request header with an allowlist that matches any number of
// hosts, every host is an audience set. Two rounds over 2000 hosts cost
// 4000 STS calls before the mint budget (the cache holds 1024 sets); now
// they cost at most --token-mint-burst plus --token-mint-rate a second.
// Past the budget a request for a host not cached gets 503 with Retry-After,
// counted under its own error_class; the hosts that got a token keep
// working, and no STS call is wasted.
func TestMintRateBoundsSTSSpendAcrossManyHosts(t *testing.T) {
	t.Parallel()
	srv := ststest.NewServer()
	t.Cleanup(srv.Close)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "" {
			http.Error(w, "no token", http.StatusUnauthorized)
			return
		}
		io.WriteString(w, "ok")
	}))
	t.Cleanup(up.Close)
	// Every upstream host is this loopback server: the names never resolve.
	var d net.Dialer
	dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
		return d.DialContext(ctx, network, up.Listener.Addr().String())
	}
	const (
		hosts = 2000
		burst = stsauth.DefaultMintBurst
		rate  = 1.0 // a second; small, so the cache never fills however slow the run
	)
	start := time.Now()
	addr, metricsAddr, logs := serveWith(t, srv, func(c *config) { c.dialUpstream = dial },
		"--allowed-hosts", "*.fleet.localhost", "--token-mint-rate", fmt.Sprint(rate), "--access-log=false")
	c := &http.Client{Timeout: waitTimeout, Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	t.Cleanup(c.CloseIdleConnections)

	type answer struct {
		status     int
		retryAfter string
		body       string
		err        error
	}
	round := func() []answer {
		answers := make([]answer, hosts)
		next := make(chan int)
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range next {
					status, h, body, err := sendTo(c, addr, fmt.Sprintf("h%d.fleet.localhost", i))
					answers[i] = answer{status, h.Get("Retry-After"), body, err}
				}
			}()
		}
		for i := range hosts {
			next <- i
		}
		close(next)
		wg.Wait()
		return answers
	}
	first, second := round(), round()
	elapsed := time.Since(start)

	refused := 0
	got := make([]bool, hosts) // the host got a token in some round
	for i := range hosts {
		for _, a := range []answer{first[i], second[i]} {
			require.NoError(t, a.err)
			switch a.status {
			case http.StatusOK:
				assert.Equal(t, "ok", a.body)
			case http.StatusServiceUnavailable:
				assert.Equal(t, bodyMintRateExceeded+"\n", a.body)
				assert.Equal(t, "1", a.retryAfter)
				refused++
			default:
				t.Fatalf("host %d: status %d, want 200 or 503: %s", i, a.status, a.body)
			}
		}
		if first[i].status == http.StatusOK {
			assert.Equal(t, http.StatusOK, second[i].status, "host %d had a token and lost it", i)
		}
		got[i] = first[i].status == http.StatusOK || second[i].status == http.StatusOK
	}
	// A host's first token is a mint; a host may also have been refreshed
	// (a first refresh is spread over the token's lifetime), which is not.
	minted := 0
	for i := range hosts {
		calls := srv.CallsFor(fmt.Sprintf("http://h%d.fleet.localhost", i))
		if got[i] {
			assert.Positive(t, calls, "host %d", i)
			minted++
		} else {
			assert.Zero(t, calls, "host %d was refused every time, yet cost an STS call", i)
		}
	}
	budget := burst + int(rate*elapsed.Seconds()) + 1
	assert.LessOrEqual(t, minted, budget, "mints within --token-mint-burst + --token-mint-rate × %v", elapsed)
	assert.GreaterOrEqual(t, minted, burst, "the burst went to hosts")
	t.Logf("%d STS calls for %d hosts × 2 rounds in %v: %d hosts minted, %d requests refused", srv.Calls(), hosts, elapsed, minted, refused)

	status, metrics, _, err := fetchMetrics(c, metricsAddr)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, status)
	assert.EqualValues(t, refused, metricSumWith(metrics, "token_fetch_count_total", `error_class="mint_rate_exceeded"`))
	assert.Zero(t, metricSum(metrics, "token_cache_eviction_count_total"), "the refused hosts took no cache slot")
	assert.Contains(t, logs.String(), "raise --token-mint-rate/--token-mint-burst")
}

// fetchMetrics scrapes the admin listener at metricsAddr.
func fetchMetrics(c *http.Client, metricsAddr string) (int, string, http.Header, error) {
	res, err := c.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		return 0, "", nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, string(b), res.Header, err
}

// metricSumWith returns the sum of the samples of a Prometheus metric whose
// labels contain label (`name="value"`).
func metricSumWith(exposition, name, label string) float64 {
	var sum float64
	for line := range strings.Lines(exposition) {
		if strings.HasPrefix(line, name+"{") && strings.Contains(line, label) {
			if v, err := strconv.ParseFloat(strings.TrimSpace(line[strings.LastIndexByte(line, ' ')+1:]), 64); err == nil {
				sum += v
			}
		}
	}
	return sum
}

func TestMintRetryAfter(t *testing.T) {
	t.Parallel()
	for rate, want := range map[float64]string{0: "1", 10: "1", 1: "1", 0.5: "2", 0.3: "4", 1.0 / 60: "60"} {
		assert.Equal(t, want, mintRetryAfter(rate), "mintRetryAfter(%v)", rate)
	}
}
