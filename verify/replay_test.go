package verify

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestReplayGuard(t *testing.T) {
	t.Parallel()
	clock := newClock()
	s := startSTS(t, clock, nil)
	v := newTestVerifier(t, clock, Config{Issuers: []Issuer{{URL: s.URL}}, Audiences: []string{aud}, ReplayCacheSize: 10})
	tok := mint(t, s, "ES384", aud)
	_, err := v.Verify(t.Context(), tok)
	require.NoError(t, err)
	_, err = v.Verify(t.Context(), tok)
	assert.ErrorIs(t, err, ErrReplay)
	_, err = v.Verify(t.Context(), mint(t, s, "ES384", aud))
	assert.NoError(t, err, "another token passes")
	assert.Equal(t, 2, v.replay.len())
}

// At the last instant a token is accepted (exp plus the leeway) it is still
// remembered: a replay then is refused, not let through.
func TestReplayGuardLastValidInstant(t *testing.T) {
	t.Parallel()
	clock := newClock()
	s := startSTS(t, clock, nil)
	v := newTestVerifier(t, clock, Config{Issuers: []Issuer{{URL: s.URL}}, Audiences: []string{aud}, ReplayCacheSize: 10})
	tok := mint(t, s, "ES384", aud)
	c, err := v.Verify(t.Context(), tok)
	require.NoError(t, err)
	clock.Advance(c.Expiry.Add(DefaultLeeway).Sub(clock.Now()))
	_, err = v.Verify(t.Context(), tok)
	assert.ErrorIs(t, err, ErrReplay, "replayed at exp + leeway")
	clock.Advance(time.Nanosecond)
	_, err = v.Verify(t.Context(), tok)
	assert.ErrorIs(t, err, ErrExpired, "a moment later")
}

func TestReplayGuardBounds(t *testing.T) {
	t.Parallel()
	now := start
	g := newReplayGuard(3)
	type result struct{ fresh, evicted bool }
	check := func(iss, jti string, until, now time.Time) result {
		fresh, evicted := g.check(iss, jti, until, now)
		return result{fresh, evicted}
	}
	for i := range 3 {
		require.Equal(t, result{true, false}, check("iss", fmt.Sprint(i), now.Add(time.Duration(i+1)*time.Minute), now))
	}
	assert.Equal(t, result{false, false}, check("iss", "0", now.Add(time.Minute), now), "seen")
	assert.Equal(t, result{true, true}, check("other-iss", "0", now.Add(time.Minute), now), "jti is per issuer; full: an unexpired entry is evicted")
	assert.Equal(t, 3, g.len(), "full: the entry closest to expiry went")
	assert.Equal(t, result{true, true}, check("iss", "0", now.Add(time.Minute), now), "the evicted entry is forgotten")

	later := now.Add(90 * time.Second)
	assert.Equal(t, result{true, false}, check("iss", "new", later.Add(time.Minute), later), "expired entries make room: no eviction")
	assert.LessOrEqual(t, g.len(), 3)
	assert.Equal(t, result{false, false}, check("iss", "2", later.Add(time.Minute), later), "unexpired entries stay")
	muchLater := now.Add(time.Hour)
	assert.Equal(t, result{true, false}, check("iss", "2", muchLater.Add(time.Minute), muchLater), "expired entries go")
	assert.Equal(t, 1, g.len())
}
