package ststest

import (
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// codeThrottling is the STS error code of a rate-limited call.
const (
	codeThrottling    = "Throttling"
	throttlingMessage = "Rate exceeded"
)

// throttle is a token bucket on the server's clock.
type throttle struct {
	mu     sync.Mutex // guards the fields below
	rate   float64    // tokens per second; 0: no throttle
	burst  float64
	tokens float64
	last   time.Time // of the last refill; zero until the first call

	rejected atomic.Int64
}

// SetThrottle limits GetWebIdentityToken calls to rate per second, by the
// server's clock, with bursts of up to burst calls: a token bucket for the
// whole server, as STS throttles an account. A call over the limit is
// answered with the error code Throttling (HTTP 400, "Rate exceeded"), as
// STS does, before any other fault or validation. The bucket starts full.
// rate <= 0 removes the throttle; burst < 1 means 1. It may be called before
// [Server.Start].
func (s *Server) SetThrottle(rate float64, burst int) {
	t := &s.throttle
	t.mu.Lock()
	defer t.mu.Unlock()
	// The clock is not read here: before Start there is none yet. A full
	// bucket has nothing to refill, so refilling starts at the first call.
	t.rate, t.burst = max(rate, 0), float64(max(burst, 1))
	t.tokens, t.last = t.burst, time.Time{}
}

// Throttled returns how many GetWebIdentityToken calls the throttle of
// [Server.SetThrottle] has rejected. They are counted by [Server.Calls] too.
func (s *Server) Throttled() int { return int(s.throttle.rejected.Load()) }

// throttled answers Throttling and reports true if the call is over the
// limit.
func (s *Server) throttled(w http.ResponseWriter) bool {
	t := &s.throttle
	t.mu.Lock()
	if t.rate == 0 {
		t.mu.Unlock()
		return false
	}
	now := s.now()
	if t.last.IsZero() {
		t.last = now
	} else if elapsed := now.Sub(t.last).Seconds(); elapsed > 0 {
		t.tokens = min(t.burst, t.tokens+elapsed*t.rate)
		t.last = now
	}
	ok := t.tokens >= 1
	if ok {
		t.tokens--
	}
	t.mu.Unlock()
	if ok {
		return false
	}
	t.rejected.Add(1)
	writeError(w, codeThrottling, throttlingMessage)
	return true
}
