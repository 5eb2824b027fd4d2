package main

import (
	"sync"
	"time"
)

// logThrottle lets one record through per interval and counts the ones it
// holds back, so an STS outage logs its error once a second instead of once
// per request. The access log still has one record per request.
type logThrottle struct {
	interval time.Duration
	now      func() time.Time

	mu         sync.Mutex // guards next and suppressed
	next       time.Time
	suppressed int
}

// allow reports whether to log now and, if so, how many records were
// suppressed since the last one logged.
func (t *logThrottle) allow() (ok bool, suppressed int) {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if now.Before(t.next) {
		t.suppressed++
		return false, 0
	}
	t.next = now.Add(t.interval)
	suppressed, t.suppressed = t.suppressed, 0
	return true, suppressed
}
