package stsauth

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// rejecting is an upstream that answers 401 to the tokens in reject and
// records the bearer and body of every request.
type rejecting struct {
	mu      sync.Mutex
	reject  func(bearer string) bool
	bearers []string
	bodies  []string
}

func (u *rejecting) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		body, _ = io.ReadAll(req.Body)
		req.Body.Close()
	}
	bearer := req.Header.Get("Authorization")
	u.mu.Lock()
	u.bearers = append(u.bearers, bearer)
	u.bodies = append(u.bodies, string(body))
	reject := u.reject(bearer)
	u.mu.Unlock()
	status := http.StatusOK
	if reject {
		status = http.StatusUnauthorized
	}
	return &http.Response{StatusCode: status, Body: io.NopCloser(strings.NewReader("x")), Request: req}, nil
}

func (u *rejecting) seen() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.bearers...)
}

func newRetryTransport(t *testing.T) (*Transport, *rejecting, *fakeSTS, *fakeClock, *TokenSource) {
	ts, fake, clock := newTestSource(t)
	up := &rejecting{}
	return &Transport{Source: ts, Audience: FixedAudience(apiAudience), Base: up}, up, fake, clock, ts
}

func TestUnauthorizedIsRetriedOnceWithAFreshToken(t *testing.T) {
	tr, up, fake, _, ts := newRetryTransport(t)
	first, err := ts.Token(context.Background(), apiAudience)
	require.NoError(t, err)
	up.reject = func(b string) bool { return b == first.bearerValue() }

	for _, tc := range []struct {
		name string
		req  func() *http.Request
		body string
	}{
		{"GET", func() *http.Request {
			r, _ := http.NewRequest(http.MethodGet, "https://api.example.com/", nil)
			return r
		}, ""},
		{"POST with GetBody", func() *http.Request {
			r, _ := http.NewRequest(http.MethodPost, "https://api.example.com/", bytes.NewReader([]byte("payload")))
			return r
		}, "payload"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(up.seen())
			resp, err := tr.RoundTrip(tc.req())
			require.NoError(t, err)
			resp.Body.Close()
			assert.Equal(t, http.StatusOK, resp.StatusCode)
			up.mu.Lock()
			defer up.mu.Unlock()
			for _, b := range up.bodies[before:] {
				assert.Equal(t, tc.body, b, "the retry replays the body")
			}
		})
	}
	seen := up.seen()
	// GET: rejected + retried; POST: sent once with the fresh token.
	require.Len(t, seen, 3)
	assert.Equal(t, first.bearerValue(), seen[0])
	assert.NotEqual(t, first.bearerValue(), seen[1])
	assert.Equal(t, seen[1], seen[2])
	assert.Equal(t, 2, fake.Calls())
}

func TestUnauthorizedWithoutReplayableBodyIsReturned(t *testing.T) {
	tr, up, fake, _, _ := newRetryTransport(t)
	up.reject = func(string) bool { return true }
	req, _ := http.NewRequest(http.MethodPost, "https://api.example.com/", io.NopCloser(strings.NewReader("once")))
	require.Nil(t, req.GetBody)
	resp, err := tr.RoundTrip(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	assert.Len(t, up.seen(), 1)
	assert.Equal(t, 1, fake.Calls(), "the token is kept: nothing proves a retry would help")
}

func TestUpstreamRejectingEverythingCostsOneCallPerLifetime(t *testing.T) {
	tr, up, fake, clock, _ := newRetryTransport(t)
	up.reject = func(string) bool { return true }
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodGet, "https://api.example.com/", nil)
			resp, err := tr.RoundTrip(req)
			if err == nil {
				resp.Body.Close()
				assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
			}
		}()
	}
	wg.Wait()
	assert.Equal(t, 2, fake.Calls(), "one token, one replacement")
	for range 20 {
		req, _ := http.NewRequest(http.MethodGet, "https://api.example.com/", nil)
		resp, err := tr.RoundTrip(req)
		require.NoError(t, err)
		resp.Body.Close()
	}
	assert.Equal(t, 2, fake.Calls(), "the replacement is not invalidated")

	// A lifetime later the refreshed token may be invalidated once more.
	clock.Advance(time.Hour)
	for range 5 {
		req, _ := http.NewRequest(http.MethodGet, "https://api.example.com/", nil)
		resp, err := tr.RoundTrip(req)
		require.NoError(t, err)
		resp.Body.Close()
	}
	assert.Equal(t, 4, fake.Calls())
}

func TestInvalidateIsCompareAndDrop(t *testing.T) {
	ts, fake, _ := newTestSource(t)
	ctx := context.Background()
	old, err := ts.Token(ctx, apiAudience)
	require.NoError(t, err)
	assert.False(t, ts.Invalidate(Token{}), "the zero Token")
	assert.False(t, ts.Invalidate(newToken(apiAudience, old.Value(), old.Expiry)), "an equal JWT that is not the cached token")
	require.True(t, ts.Invalidate(old))
	assert.False(t, ts.Invalidate(old), "at most once")
	fresh, err := ts.Token(ctx, apiAudience)
	require.NoError(t, err)
	assert.NotEqual(t, old.Value(), fresh.Value())
	assert.False(t, ts.Invalidate(old), "a newer token stays")
	assert.False(t, ts.Invalidate(fresh), "a replacement is not invalidated")
	again, err := ts.Token(ctx, apiAudience)
	require.NoError(t, err)
	assert.Equal(t, fresh.Value(), again.Value())
	assert.Equal(t, 2, fake.Calls())
	assert.False(t, ts.Invalidate(newToken(MustAudience("https://unknown.example.com"), "a.b.c", time.Time{})))
}

// waitingCtx is a context that reports, by closing waiting, the first time
// someone asks for its Done channel: a Token call does so only once it waits
// for a fetch (or for a slot), after it has joined or planned a flight.
type waitingCtx struct {
	context.Context
	once    sync.Once
	waiting chan struct{}
}

func (c *waitingCtx) Done() <-chan struct{} {
	c.once.Do(func() { close(c.waiting) })
	return c.Context.Done()
}

// A request that finds a token in the cache while the fetch that minted it
// is still ending, has it rejected and asks for a replacement must get a
// new token, not join that fetch and be handed the rejected one back. (The
// proxy's TestRunRetriesAfterUnauthorized failed this way about once in 300
// loaded runs: the request raced the startup prefetch.)
func TestRejectedTokenIsNotHandedBackByTheFetchThatMintedIt(t *testing.T) {
	tr, up, fake, _, ts := newRetryTransport(t)
	var rejected sync.Once
	var first string
	up.reject = func(b string) bool {
		rejected.Do(func() { first = b })
		return b == first
	}
	paused, resume := make(chan struct{}), make(chan struct{})
	var pauseOnce sync.Once
	ts.onFetched = func() {
		pauseOnce.Do(func() {
			close(paused)
			<-resume
		})
	}
	prime := make(chan error, 1)
	go func() { prime <- tr.Prime(context.Background()) }()
	<-paused // the first token is fetched; its flight has not ended

	ctx := &waitingCtx{Context: context.Background(), waiting: make(chan struct{})}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://api.example.com/", nil)
	require.NoError(t, err)
	type result struct {
		resp *http.Response
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := tr.RoundTrip(req)
		done <- result{resp, err}
	}()
	<-ctx.waiting // the request waits for a flight
	close(resume)
	r := <-done
	require.NoError(t, r.err)
	r.resp.Body.Close()
	require.NoError(t, <-prime)

	seen := up.seen()
	require.NotEmpty(t, seen)
	assert.Equal(t, http.StatusOK, r.resp.StatusCode, "the request was answered 401: the retry sent the rejected token")
	if len(seen) == 2 {
		assert.NotEqual(t, seen[0], seen[1], "the retry carried the rejected token")
	}
	assert.LessOrEqual(t, fake.Calls(), 2)
}
