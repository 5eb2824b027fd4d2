package stsauth

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// schedHarness drives a TokenSource whose scheduler runs on a fake clock
// whose timers fire.
type schedHarness struct {
	ts    *TokenSource
	fake  *fakeSTS
	clock *fakeClock
	scans chan bool
}

func newSchedHarness(t *testing.T, opts ...Option) *schedHarness {
	t.Helper()
	ts, fake, clock := newTestSource(t, opts...)
	clock.firing = true
	h := &schedHarness{ts: ts, fake: fake, clock: clock, scans: make(chan bool, 1000)}
	ts.onScan = func(fired bool) { h.scans <- fired }
	return h
}

// quiesce waits, without sleeping, until no fetch or refresh runs and the
// scheduler sleeps having seen every poke.
func (h *schedHarness) quiesce() {
	for !isQuiet(h.ts) {
		runtime.Gosched()
	}
}

// isQuiet reports whether no fetch or refresh of ts runs and its scheduler,
// if started, sleeps having seen every poke. A poke is counted before it is
// sent, and a fired fake timer marks the scheduler awake, so a quiet source
// stays quiet until something outside it acts.
func isQuiet(ts *TokenSource) bool {
	if ts.tracked.Load() != 0 {
		return false
	}
	if !ts.schedStarted.Load() {
		return ts.tracked.Load() == 0 && !ts.schedStarted.Load()
	}
	p := ts.parked.Load()
	return p == ts.pokes.Load() && ts.tracked.Load() == 0 && ts.pokes.Load() == p
}

// advance moves the clock by d, stopping at each timer the scheduler arms
// on the way as a real clock would: it fires the timer, waits for the
// scan it causes and for the refreshes that scan starts.
func (h *schedHarness) advance(t *testing.T, d time.Duration) {
	t.Helper()
	h.quiesce()
	end := h.clock.Now().Add(d)
	for {
		next, ok := h.clock.NextTimer()
		if !ok || next.After(end) {
			h.clock.Advance(end.Sub(h.clock.Now()))
			h.quiesce()
			return
		}
		require.Positive(t, h.clock.Advance(next.Sub(h.clock.Now())))
		for fired := false; !fired; {
			select {
			case fired = <-h.scans:
			case <-time.After(10 * time.Second):
				t.Fatal("the scheduler did not scan after its timer fired")
			}
		}
		h.quiesce()
	}
}

// token gets the token for apiAudience and reports whether that call
// itself waited on STS.
func (h *schedHarness) token(t *testing.T) (Token, bool) {
	t.Helper()
	h.quiesce()
	before := h.fake.Calls()
	tok, err := h.ts.Token(context.Background(), apiAudience)
	require.NoError(t, err)
	waited := h.fake.Calls() != before
	h.quiesce()
	return tok, waited
}

func TestSchedulerRefreshesAUsedSetWithoutTraffic(t *testing.T) {
	h := newSchedHarness(t, WithDuration(time.Hour), WithRefreshSkew(5*time.Minute))
	first, _ := h.token(t)
	h.token(t) // a use since the token was minted
	// The refresh moment: 55 min less the largest jitter (30 s).
	h.advance(t, 54*time.Minute)
	assert.Equal(t, 1, h.fake.Calls(), "nothing is due before the refresh moment")
	h.advance(t, 30*time.Second)
	assert.Equal(t, 2, h.fake.Calls(), "the scheduler refreshed without a request")

	// The next request, long after the first token expired, does not wait.
	h.advance(t, 20*time.Minute)
	tok, waited := h.token(t)
	assert.False(t, waited)
	assert.NotEqual(t, first.Value(), tok.Value())
	assert.Equal(t, 2, h.fake.Calls())
}

func TestSchedulerLeavesAnUnusedSetToExpire(t *testing.T) {
	h := newSchedHarness(t, WithDuration(time.Hour), WithRefreshSkew(5*time.Minute))
	h.token(t) // minted, never used again
	h.advance(t, 54*time.Minute+30*time.Second)
	h.advance(t, 10*time.Minute)
	assert.Equal(t, 1, h.fake.Calls(), "an unused set costs no STS call")
	_, waited := h.token(t)
	assert.True(t, waited, "after a whole lifetime unused, the next request fetches")
}

// A batch job that calls once every 50 minutes, with 1 h tokens: without
// the scheduler every call after the first found its token in the refresh
// window or expired; with it, none waits.
func TestSchedulerBatchJobNeverWaits(t *testing.T) {
	h := newSchedHarness(t, WithDuration(time.Hour), WithRefreshSkew(5*time.Minute))
	h.token(t)
	for i := range 6 {
		h.advance(t, 50*time.Minute)
		_, waited := h.token(t)
		require.False(t, waited, "call %d waited on STS", i+2)
	}
	// 300 min of 1 h tokens refreshed about every 54.5 min.
	assert.LessOrEqual(t, h.fake.Calls(), 7)
}

func TestSchedulerRetriesWithBackoff(t *testing.T) {
	h := newSchedHarness(t, WithDuration(time.Hour), WithRefreshSkew(5*time.Minute))
	h.token(t)
	h.token(t)
	h.fake.set(func(f *fakeSTS) { f.fail = errors.New("sts down") })
	h.advance(t, 54*time.Minute+30*time.Second)
	require.Equal(t, 2, h.fake.Calls())
	// The test jitter takes the whole window: 1 s, then 2 s, then 4 s.
	h.advance(t, time.Second)
	assert.Equal(t, 3, h.fake.Calls())
	h.advance(t, time.Second)
	assert.Equal(t, 3, h.fake.Calls(), "still backing off")
	h.advance(t, time.Second)
	assert.Equal(t, 4, h.fake.Calls())
	h.fake.set(func(f *fakeSTS) { f.fail = nil })
	h.advance(t, 4*time.Second)
	assert.Equal(t, 5, h.fake.Calls())
	_, waited := h.token(t)
	assert.False(t, waited)
	h.advance(t, 10*time.Minute)
	assert.Equal(t, 5, h.fake.Calls(), "the new token is not used yet, so not refreshed")
}

func TestFirstRefreshIsSpreadOverTheLifetime(t *testing.T) {
	ts, fake, clock := newTestSource(t, WithDuration(time.Hour), WithRefreshSkew(5*time.Minute))
	var spreads []time.Duration
	ts.spread = func(max time.Duration) time.Duration {
		spreads = append(spreads, max)
		return max / 2
	}
	ctx := context.Background()
	start := clock.Now()
	_, err := ts.Token(ctx, apiAudience)
	require.NoError(t, err)
	usual := 54*time.Minute + 30*time.Second // exp less the skew and the largest jitter
	e := ts.cache.get(apiAudience.key)
	assert.Equal(t, start.Add(usual/2), e.state.Load().refreshAt, "the first refresh comes half way to the usual moment")

	clock.Advance(usual / 2)
	_, err = ts.Token(ctx, apiAudience)
	require.NoError(t, err)
	settle(ts)
	require.Equal(t, 2, fake.Calls())
	assert.Equal(t, clock.Now().Add(usual), e.state.Load().refreshAt, "later refreshes are not spread")
	assert.Equal(t, []time.Duration{usual}, spreads)
}
