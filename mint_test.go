package stsauth

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// The mint budget charges sets the source does not hold, and nothing else:
// past it a new set fails at once, without an STS call or a cache slot,
// while cached sets, their refreshes and the replacement of an invalidated
// token go on.
func TestMintRateBoundsNewSetsOnly(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	ts, fake, clock := newTestSource(t, WithMintRate(1, 3), WithMeterProvider(mp), WithDuration(time.Hour), WithRefreshSkew(5*time.Minute))
	ctx := context.Background()

	for i := range 3 {
		_, err := ts.Token(ctx, distinctAudience(i))
		require.NoError(t, err, "set %d is within the burst", i)
	}
	for i := 3; i < 10; i++ {
		_, err := ts.Token(ctx, distinctAudience(i))
		require.ErrorIs(t, err, ErrMintRateExceeded, "set %d", i)
		var te *TokenError
		require.ErrorAs(t, err, &te)
		assert.Equal(t, distinctAudience(i), te.Audience)
	}
	assert.Equal(t, 3, fake.Calls(), "a refused mint makes no STS call")
	assert.EqualValues(t, 3, ts.cache.len(), "a refused mint takes no cache slot")
	assert.EqualValues(t, 7, sumClass(collect(t, reader)["token.fetch.count"], "mint_rate_exceeded"))

	// Cached sets keep being served, with the bucket empty.
	for i := range 3 {
		_, err := ts.Token(ctx, distinctAudience(i))
		require.NoError(t, err)
	}
	// Dropping a rejected token and fetching its replacement is not a mint.
	tok, err := ts.Token(ctx, distinctAudience(0))
	require.NoError(t, err)
	require.True(t, ts.Invalidate(tok))
	_, err = ts.Token(ctx, distinctAudience(0))
	require.NoError(t, err)
	assert.Equal(t, 4, fake.Calls())

	// Refreshes are not mints: inside the refresh window every cached set
	// refreshes, the bucket being empty.
	clock.Advance(56 * time.Minute)
	for i := range 3 {
		_, err := ts.Token(ctx, distinctAudience(i))
		require.NoError(t, err)
	}
	settle(ts)
	assert.Equal(t, 7, fake.Calls(), "three refreshes")

	// 56 minutes refilled the bucket to its burst of 3, no more.
	for i := 10; i < 13; i++ {
		_, err := ts.Token(ctx, distinctAudience(i))
		require.NoError(t, err)
	}
	_, err = ts.Token(ctx, distinctAudience(13))
	require.ErrorIs(t, err, ErrMintRateExceeded)
	clock.Advance(time.Second) // one more mint
	_, err = ts.Token(ctx, distinctAudience(13))
	require.NoError(t, err)
	_, err = ts.Token(ctx, distinctAudience(14))
	require.ErrorIs(t, err, ErrMintRateExceeded)
}

// sumClass sums the token.fetch.count series of one error class.
func sumClass(series map[string]int64, class string) int64 {
	var n int64
	for k, v := range series {
		if strings.Contains(k, "error_class="+class+",") {
			n += v
		}
	}
	return n
}

// A set evicted from the cache is not held any more: asking for it again is
// a mint.
func TestMintRateChargesAnEvictedSetAgain(t *testing.T) {
	ts, fake, _ := newTestSource(t, WithMintRate(1, 3), WithCacheSize(2))
	ctx := context.Background()
	for i := range 3 { // the third evicts the first
		_, err := ts.Token(ctx, distinctAudience(i))
		require.NoError(t, err)
	}
	_, err := ts.Token(ctx, distinctAudience(0))
	require.ErrorIs(t, err, ErrMintRateExceeded)
	assert.Equal(t, 3, fake.Calls())
}

// A cache that keeps evicting sets is reported at most once a minute: to
// WithCacheChurnFunc's function when set, else as a warning naming
// WithCacheSize.
func TestCacheChurnIsReportedOnceAMinute(t *testing.T) {
	t.Run("func", func(t *testing.T) {
		var calls []int
		ts, _, clock := newTestSource(t, WithCacheSize(20), WithMintRate(0, 0),
			WithCacheChurnFunc(func(n int, window time.Duration) {
				assert.Equal(t, time.Minute, window)
				calls = append(calls, n)
			}))
		ctx := context.Background()
		ask := func(from, to int) {
			for i := from; i < to; i++ {
				_, err := ts.Token(ctx, distinctAudience(i))
				require.NoError(t, err)
			}
		}
		ask(0, 22) // 2 evictions: a tenth of the cache, not more
		assert.Empty(t, calls)
		ask(22, 100) // the third eviction passes it
		assert.Equal(t, []int{3}, calls, "once in the minute")
		clock.Advance(time.Minute)
		ask(100, 102)
		assert.Equal(t, []int{3}, calls, "a new minute counts anew")
		ask(102, 103)
		assert.Equal(t, []int{3, 3}, calls)
	})
	t.Run("log", func(t *testing.T) {
		var logs bytes.Buffer
		ts, _, _ := newTestSource(t, WithCacheSize(1), WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
		for i := range 10 {
			_, err := ts.Token(context.Background(), distinctAudience(i))
			require.NoError(t, err)
		}
		assert.Equal(t, 1, strings.Count(logs.String(), "token cache churning"), logs.String())
		assert.Contains(t, logs.String(), "raise the cache size (WithCacheSize)")
		assert.Contains(t, logs.String(), "cache_size=1")
	})
}
