package stsauth

import "time"

// The refresh scheduler: one goroutine and one timer per TokenSource, not one
// per entry. A request inside an entry's refresh window starts its refresh
// (refresh-ahead), but an audience set used rarely may see no request in
// that window and would then wait on STS at its next request. The scheduler
// refreshes, once its refresh moment comes, every set that was used since
// its current token was minted. A set not used for a whole token lifetime is
// left to expire and costs no STS call.
//
// The goroutine starts with the first token stored and ends at Close. It
// sleeps until the earliest refresh moment (or end of backoff) among the
// cached entries; a fetch that ends wakes it to re-plan, since the new token
// may be due before the timer.

// refreshTrigger says what started a fetch, for the refresh metric.
type refreshTrigger string

const (
	triggerRequest      refreshTrigger = "request"
	triggerScheduler    refreshTrigger = "scheduler"
	triggerInvalidation refreshTrigger = "invalidation"
)

// startScheduler starts the scheduler goroutine unless it runs already or
// the source is closed.
func (ts *TokenSource) startScheduler() {
	if ts.schedStarted.Load() {
		return
	}
	ts.closeMu.Lock()
	defer ts.closeMu.Unlock()
	if ts.closed.Load() || ts.schedStarted.Load() {
		return
	}
	ts.schedStarted.Store(true)
	go ts.schedule()
}

// poke tells the scheduler that an entry's state changed. It never blocks.
func (ts *TokenSource) poke() {
	ts.pokes.Add(1)
	select {
	case ts.wake <- struct{}{}:
	default:
	}
}

// schedule is the scheduler goroutine.
func (ts *TokenSource) schedule() {
	defer close(ts.schedDone)
	fired := false
	for {
		seen := ts.pokes.Load()
		next := ts.scan(ts.now(), fired)
		if !next.IsZero() && !next.After(ts.now()) {
			fired = true // something is due already: scan again to start it
			continue
		}
		var timer <-chan time.Time
		stop := func() bool { return false }
		if !next.IsZero() {
			timer, stop = ts.timerAt(next)
		}
		if ts.onScan != nil {
			ts.onScan(fired)
		}
		ts.parked.Store(seen)
		select {
		case <-timer:
			fired = true
		case <-ts.wake:
			fired = false
		case <-ts.stop.Done():
			stop()
			return
		}
		ts.parked.Store(-1)
		stop()
	}
}

// scan looks at every cached entry at now. When refresh is set (the timer
// fired) it starts the refresh of each entry that is due and was used since
// its token was minted. It returns the earliest moment a refresh will be
// due, or the zero time if none will.
func (ts *TokenSource) scan(now time.Time, refresh bool) time.Time {
	var next time.Time
	plan := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	for _, e := range ts.cache.snapshot() {
		c := e.state.Load()
		if c == nil || !now.Before(c.expireAt) {
			continue // no token, or expired: the next request fetches
		}
		due := c.refreshAt
		if r := max(e.retryAt.Load(), ts.backoff.retryAt.Load()); r > due.UnixNano() {
			due = time.Unix(0, r)
		}
		switch {
		case now.Before(due):
			plan(due)
		case !c.used.Load() || e.refreshing.Load():
			// Unused: a request in the window still refreshes it; if none
			// comes, it expires. Refreshing: its end wakes the scheduler.
		case refresh:
			ts.refreshAhead(e, now, triggerScheduler)
		default:
			plan(now)
		}
	}
	return next
}

// realTimerAt is the production timerAt.
func realTimerAt(at time.Time) (<-chan time.Time, func() bool) {
	t := time.NewTimer(time.Until(at))
	return t.C, t.Stop
}
