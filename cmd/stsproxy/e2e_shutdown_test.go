package main

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestE2EShutdownDelay sends SIGTERM to a proxy with --shutdown-delay while a
// client opens a new connection for each request every 10 ms, as clients
// keep doing until the endpoint controller removes a terminating pod.
// /readyz must turn 503 at once, and every request started before the
// delay could have ended must succeed: no refused connection, no error.
func TestE2EShutdownDelay(t *testing.T) {
	t.Parallel()
	const delay = 2 * time.Second
	// Requests that start within window after the signal was sent must
	// succeed. The proxy receives the signal after it was sent, so its delay
	// ends no earlier than delay after it; the rest is slop for a loaded
	// machine.
	const window = delay / 2
	sts := newSTS(t)
	up := newRecordingUpstream(t, nil)
	p := startProxy(t, sts, "--upstream-host", up.host(), "--shutdown-delay", delay.String(), "--shutdown-timeout", "5s")
	url := "http://" + p.addr + "/rollout"

	keepAlive := testClient(t)
	status, _ := get(t, keepAlive, url, nil) // the token is cached from here on
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, http.StatusOK, readyz(t, keepAlive, p))

	type outcome struct {
		start  time.Time
		status int
		err    error
	}
	var (
		mu       sync.Mutex // guards outcomes
		outcomes []outcome
	)
	fresh := &http.Client{Timeout: waitTimeout, Transport: &http.Transport{DisableKeepAlives: true}}
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			o := outcome{start: time.Now()}
			res, err := fresh.Get(url)
			if err == nil {
				_, err = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				o.status = res.StatusCode
			}
			o.err = err
			mu.Lock()
			outcomes = append(outcomes, o)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		<-stopped
	})

	time.Sleep(100 * time.Millisecond) // traffic before the signal too
	sentAt := time.Now()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))

	// Not ready at once: the first answer after the signal was received.
	p.waitLog(t, `"msg":"draining: not ready, still serving until --shutdown-delay ends"`)
	assert.Equal(t, http.StatusServiceUnavailable, readyz(t, keepAlive, p))
	// A keep-alive client is asked to move: its connection closes after
	// the response.
	res, err := keepAlive.Get(url)
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, http.StatusOK, res.StatusCode)
	assert.True(t, res.Close, "response while draining should carry Connection: close")

	assert.Equal(t, 0, p.wait(t), "logs:\n%s", p.logs.String())
	// Keep the client going until it sees the closed listener, which proves
	// it would have noticed one during the delay.
	deadline := time.Now().Add(waitTimeout)
	for {
		mu.Lock()
		refused := len(outcomes) > 0 && errors.Is(outcomes[len(outcomes)-1].err, syscall.ECONNREFUSED)
		mu.Unlock()
		if refused || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond) // poll interval, bounded by the deadline
	}
	close(stop)
	<-stopped

	var during, refusedAfter int
	for _, o := range outcomes {
		switch {
		case o.start.Before(sentAt.Add(window)):
			if o.start.After(sentAt) {
				during++
			}
			if o.err != nil || o.status != http.StatusOK {
				t.Errorf("request started %v after SIGTERM: status %d, error %v", o.start.Sub(sentAt), o.status, o.err)
			}
		case errors.Is(o.err, syscall.ECONNREFUSED):
			refusedAfter++
		}
	}
	t.Logf("%d requests, %d in the first %v of the %v delay, %d refused after the proxy exited", len(outcomes), during, window, delay, refusedAfter)
	assert.GreaterOrEqual(t, during, 10, "too few requests during the delay to mean anything")
	assert.Positive(t, refusedAfter, "the client never saw the closed listener")
}

// readyz returns the status of the proxy's /readyz.
func readyz(t *testing.T, c *http.Client, p *proc) int {
	t.Helper()
	res, err := c.Get("http://" + p.metricsAddr + "/readyz")
	require.NoError(t, err)
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, res.Body)
	return res.StatusCode
}

// TestCloseWhileDraining: once draining, responses ask the client to close
// the connection, except an upgrade's, whose Connection must say Upgrade.
func TestCloseWhileDraining(t *testing.T) {
	t.Parallel()
	var draining atomic.Bool
	h := closeWhileDraining(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), &draining)
	serve := func(upgrade bool) string {
		r := httptest.NewRequest(http.MethodGet, "http://127.0.0.1/", nil)
		if upgrade {
			r.Header.Set("Connection", "Upgrade")
			r.Header.Set("Upgrade", "websocket")
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Header().Get("Connection")
	}
	assert.Empty(t, serve(false), "not draining")
	draining.Store(true)
	assert.Equal(t, "close", serve(false))
	assert.Empty(t, serve(true), "an upgrade while draining")
}
