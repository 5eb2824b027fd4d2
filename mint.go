package stsauth

import (
	"errors"
	"sync"
	"time"
)

// The mint budget. Each audience set the source does not hold costs an STS
// call, and with audiences derived from hosts (HostAudience behind a proxy
// that routes by a request header) a client names as many sets as it likes.
// STS quota is shared by the account's other workloads, so the source bounds
// how fast it mints tokens for sets it does not hold, with a token bucket.
// Sets it holds are never charged: their refreshes, the replacement of an
// invalidated token and the retries of a failed fetch are bounded already
// (one flight per set, backoff).

// Defaults of [WithMintRate]: a sidecar with a few audiences, or a shared
// proxy warming a few hundred hosts, never meets them; a client naming
// thousands of hosts costs at most DefaultMintBurst calls at once, then
// DefaultMintRate a second.
const (
	DefaultMintRate  = 10.0
	DefaultMintBurst = 500
)

// ErrMintRateExceeded is wrapped by the error of a [TokenSource.Token] call
// for an audience set the source does not hold, made while the mint budget
// ([WithMintRate]) is spent. The call fails at once: it makes no STS call and
// takes no cache slot, so the sets already cached keep being served. Asking
// again after 1/rate seconds finds a mint available, unless others took it.
var ErrMintRateExceeded = errors.New("stsauth: token mint rate exceeded")

// mintBudget is the token bucket of WithMintRate: burst mints at once,
// refilled at rate a second. A zero rate means no limit.
type mintBudget struct {
	rate  float64 // mints a second; 0: no limit
	burst float64

	mu     sync.Mutex // guards tokens and last
	tokens float64
	last   time.Time // when tokens was last brought up to date; zero: full
}

// take spends one mint at now, and reports whether there was one.
func (b *mintBudget) take(now time.Time) bool {
	if b.rate == 0 {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.last.IsZero():
		b.tokens, b.last = b.burst, now
	case now.After(b.last):
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// Cache churn. An evicted set that comes back costs an STS call (and a mint
// from the budget); a cache that keeps evicting sets is too small for the
// sets in use. The source warns, at most once per churnWindow, when a window
// saw more evictions than a tenth of the cache.

// churnWindow is the period over which evictions are counted, and the
// shortest interval between two churn warnings.
const churnWindow = time.Minute

// churn counts the evictions of the current window. Its fields are guarded
// by the cache's mu: the cache calls onEvict under it.
type churn struct {
	windowStart time.Time
	evicted     int
}

// evict counts one eviction at now from a cache of size, and reports the
// evictions of the window when they just passed the warning threshold: at
// most once a window.
func (c *churn) evict(now time.Time, size int) (evicted int, warn bool) {
	if c.windowStart.IsZero() || now.Sub(c.windowStart) >= churnWindow {
		c.windowStart, c.evicted = now, 0
	}
	c.evicted++
	return c.evicted, c.evicted == max(1, size/10)+1
}
