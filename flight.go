package stsauth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Fetches in flight. Each entry has at most one fetch planned or running (a
// flight), shared by every caller of that audience set, and the source
// bounds how many run at once: a caller whose set has no flight waits for
// a slot in its own goroutine, bounded by its own context and by the fetch
// timeout, before any goroutine is started for it. Failures that are not
// about the audience set (credentials, throttling, the feature being
// disabled, the network) back off the whole source, callers already
// waiting for a slot included, so that STS sees about one call per backoff
// step however many sets are asked for.

// DefaultMaxConcurrentFetches is how many STS calls a [TokenSource] makes at
// once unless [WithMaxConcurrentFetches] says otherwise.
const DefaultMaxConcurrentFetches = 32

// MaxMaxConcurrentFetches bounds [WithMaxConcurrentFetches].
const MaxMaxConcurrentFetches = 1024

// flight is one fetch for an entry, planned (its leader waits for a slot)
// or running.
type flight struct {
	done    chan struct{} // closed when c and err are set
	c       *cached
	err     error
	trigger refreshTrigger
	probe   bool // the one fetch let through to end a source-wide backoff
}

// errAbandoned ends a flight whose leader gave up before it started; its
// waiters try again.
var errAbandoned = errors.New("stsauth: fetch abandoned before it started")

// sourceBackoff is the backoff of the whole source after failures that
// are not about one audience set.
type sourceBackoff struct {
	retryAt atomic.Int64 // Unix nanoseconds; 0 when not backing off
	probing atomic.Bool  // a probe fetch runs

	mu       sync.Mutex // guards failures and lastErr
	failures int
	lastErr  error
}

// fetchWait gets a fresh token for e, sharing one STS call among concurrent
// callers, unless a backoff is running. The fetch timeout bounds the whole
// wait, the wait for a slot included: a caller gets its token, or an error,
// within it.
func (ts *TokenSource) fetchWait(ctx context.Context, e *entry) (Token, error) {
	timeout, stop := ts.timerAt(ts.now().Add(ts.cfg.fetchTimeout))
	defer stop()
	for {
		f, lead, c, err := ts.join(e, triggerRequest)
		switch {
		case err != nil:
			return Token{}, &TokenError{Audience: e.aud, Err: err}
		case c != nil:
			return c.tok, nil
		case lead:
			select {
			case ts.slots <- struct{}{}:
			case <-ctx.Done():
				ts.finish(e, f, nil, errAbandoned)
				return Token{}, &TokenError{Audience: e.aud, Err: ctx.Err()}
			case <-timeout:
				ts.finish(e, f, nil, errAbandoned)
				return Token{}, ts.waitTimedOut(e)
			}
			if err := ts.readmit(f); err != nil {
				// The source began backing off while this caller waited
				// for its slot: fail now, as callers that came later do.
				<-ts.slots
				ts.finish(e, f, nil, err)
				return Token{}, &TokenError{Audience: e.aud, Err: err}
			}
			ts.launch(e, f, context.WithoutCancel(ctx), false)
		}
		select {
		case <-f.done:
			if f.err == errAbandoned {
				continue
			}
			if f.err != nil {
				return Token{}, &TokenError{Audience: e.aud, Err: f.err}
			}
			return f.c.tok, nil // finish stored it
		case <-ctx.Done():
			return Token{}, &TokenError{Audience: e.aud, Err: ctx.Err()}
		case <-timeout:
			return Token{}, ts.waitTimedOut(e)
		}
	}
}

// waitTimedOut is the error of a caller that got no token within the fetch
// timeout. The fetch it waited for, if one started, carries on for others.
func (ts *TokenSource) waitTimedOut(e *entry) error {
	return &TokenError{Audience: e.aud, Err: fmt.Errorf("no token within the fetch timeout of %v: %w", ts.cfg.fetchTimeout, context.DeadlineExceeded)}
}

// readmit asks the source backoff again, for flight f whose leader has just
// got a slot: the first wave of fetches may have failed, and started a
// backoff, while it waited. It returns the backoff's error when f may not
// start; f may become the probe that ends the backoff.
func (ts *TokenSource) readmit(f *flight) error {
	if f.probe {
		return nil
	}
	probe, err := ts.backoff.admit(ts.now())
	if err != nil {
		return err
	}
	f.probe = probe // read by finish, in the goroutine launch starts
	return nil
}

// join returns the flight of e to wait for, creating it (lead) if there is
// none. It returns a cached token instead when one arrived since the caller
// missed, and the last error when a backoff runs.
func (ts *TokenSource) join(e *entry, trigger refreshTrigger) (f *flight, lead bool, c *cached, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.flight != nil {
		return e.flight, false, nil, nil
	}
	now := ts.now()
	if c := e.state.Load(); c != nil && now.Before(c.refreshAt) {
		return nil, false, c, nil
	}
	if e.lastErr != nil && now.UnixNano() < e.retryAt.Load() {
		return nil, false, nil, e.lastErr
	}
	probe, err := ts.backoff.admit(now)
	if err != nil {
		return nil, false, nil, err
	}
	f = &flight{done: make(chan struct{}), trigger: trigger, probe: probe}
	if e.state.Load() == dropped {
		f.trigger = triggerInvalidation
	}
	e.flight = f
	e.refreshing.Store(true)
	return f, true, nil, nil
}

// admit decides whether a fetch may start while the source backs off: no
// before the backoff ends, then one probe at a time. It returns the source's
// last error when the answer is no.
func (b *sourceBackoff) admit(now time.Time) (probe bool, err error) {
	r := b.retryAt.Load()
	if r == 0 {
		return false, nil
	}
	b.mu.Lock()
	lastErr := b.lastErr
	b.mu.Unlock()
	if lastErr == nil {
		return false, nil
	}
	if now.UnixNano() < r || !b.probing.CompareAndSwap(false, true) {
		return false, lastErr
	}
	return true, nil
}

// launch runs the fetch of flight f, whose slot its caller holds, in a
// goroutine that Close waits for. A background refresh (refresh) that fails
// is counted as a refresh failure.
func (ts *TokenSource) launch(e *entry, f *flight, parent context.Context, refresh bool) {
	ok := ts.goTracked(func() {
		c, err := ts.fetch(parent, e, f.trigger)
		if ts.onFetched != nil {
			ts.onFetched()
		}
		<-ts.slots
		if refresh && err != nil && err != ErrClosed {
			ts.metrics.refreshFailures.Add(ts.stop, 1, e.attrs.add...)
		}
		ts.finish(e, f, c, err)
	})
	if !ok {
		<-ts.slots
		ts.finish(e, f, nil, ErrClosed)
	}
}

// finish ends flight f with its outcome, stores its token (if any) in e,
// wakes its waiters and the scheduler (a slot or a token is there to plan
// with).
//
// The token is stored and the flight ends in one step, under e.mu, which
// join holds to pick a flight: a caller that sees the new token can no
// longer join the flight that fetched it. Were the token stored first, a
// caller could take it from the cache, have it rejected, drop it
// ([TokenSource.Invalidate]) and ask again, only to join the flight that
// was still ending and be handed the very token it had dropped.
func (ts *TokenSource) finish(e *entry, f *flight, c *cached, err error) {
	e.mu.Lock()
	if c != nil {
		c.replacement = e.state.Load() == dropped
		e.state.Store(c)
	}
	e.flight = nil
	e.refreshing.Store(false)
	f.c, f.err = c, err
	e.mu.Unlock()
	if f.probe {
		ts.backoff.probing.Store(false)
	}
	if c != nil && ts.cfg.tokenHook != nil {
		ts.cfg.tokenHook(c.tok) // cached, and not yet handed to a waiter
	}
	close(f.done)
	if c != nil {
		ts.startScheduler()
	}
	ts.poke()
}

// refreshAhead starts the background refresh of e unless a fetch for it is
// planned or running, a backoff has not run out, or every slot is taken. It
// never waits. It reports whether it started one.
func (ts *TokenSource) refreshAhead(e *entry, now time.Time, trigger refreshTrigger) bool {
	if e.refreshing.Load() || now.UnixNano() < e.retryAt.Load() || now.UnixNano() < ts.backoff.retryAt.Load() {
		return false
	}
	select {
	case ts.slots <- struct{}{}:
	default:
		return false // the end of a running fetch pokes the scheduler
	}
	f, lead, _, err := ts.join(e, trigger)
	if err != nil || !lead {
		<-ts.slots
		return false
	}
	ts.launch(e, f, ts.stop, true)
	return true
}

// recordFailure counts a failed fetch for e and sets when the next may run:
// full jitter over an exponentially growing window. A failure that is not
// about the audience set also backs off the whole source.
func (ts *TokenSource) recordFailure(e *entry, now time.Time, err error) {
	e.mu.Lock()
	e.failures++
	e.retryAt.Store(now.Add(ts.backoffDelay(e.failures)).UnixNano())
	e.lastErr = err
	failures := e.failures
	e.mu.Unlock()
	wide := sourceWide(err)
	if wide {
		b := &ts.backoff
		b.mu.Lock()
		b.failures++
		b.lastErr = err
		b.retryAt.Store(now.Add(ts.backoffDelay(b.failures)).UnixNano())
		b.mu.Unlock()
	} else {
		// STS answered about this set: whatever stood between the source
		// and STS is gone.
		ts.clearSourceBackoff()
	}
	// The SDK's error names the operation and the STS error code and
	// message; it never holds a token, which only a success carries. code
	// and fix are Explain's, so logs say what to do.
	x := Explain(err)
	ts.cfg.logger.Warn("stsauth: web identity token fetch failed",
		slog.String("audience", e.aud.String()),
		slog.Int("consecutive_failures", failures),
		slog.Bool("source_wide", wide),
		slog.Any("error", err),
		slog.String("code", x.Code),
		slog.String("fix", x.Fix))
}

// recordSuccess clears the backoffs of e and of the source.
func (ts *TokenSource) recordSuccess(e *entry) {
	e.mu.Lock()
	e.failures, e.lastErr = 0, nil
	e.retryAt.Store(0)
	e.mu.Unlock()
	ts.clearSourceBackoff()
}

// clearSourceBackoff ends the backoff of the whole source.
func (ts *TokenSource) clearSourceBackoff() {
	if ts.backoff.retryAt.Load() != 0 {
		b := &ts.backoff
		b.mu.Lock()
		b.failures, b.lastErr = 0, nil
		b.retryAt.Store(0)
		b.mu.Unlock()
	}
}

// backoffDelay is the delay after the nth consecutive failure: full jitter
// over base·2^(n-1), capped, and never less than backoffMin.
func (ts *TokenSource) backoffDelay(n int) time.Duration {
	window := backoffMax
	if n <= 16 {
		window = min(backoffMax, backoffBase<<(n-1))
	}
	return max(backoffMin, ts.jitter(window))
}
