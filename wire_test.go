package stsauth

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stsauth/stsauth/ststest"
)

// These tests drive the real SDK client over HTTP against ststest, with the
// emulator and the token source sharing one fake clock.

func newWireSource(t *testing.T, opts ...Option) (*TokenSource, *ststest.Server, *fakeClock) {
	t.Helper()
	clock := newFakeClock()
	srv := ststest.NewUnstartedServer()
	srv.Now = clock.Now
	srv.Start()
	t.Cleanup(srv.Close)
	ts, err := NewTokenSource(srv.Client(func(o *sts.Options) { o.RetryMaxAttempts = 1 }), opts...)
	require.NoError(t, err)
	ts.now = clock.Now
	ts.jitter = func(max time.Duration) time.Duration { return max }
	t.Cleanup(func() { ts.Close() })
	return ts, srv, clock
}

func TestWireRefreshWindowServesCachedTokenWhileSTSIsHeld(t *testing.T) {
	ts, srv, clock := newWireSource(t, WithDuration(time.Hour), WithRefreshSkew(5*time.Minute))
	ctx := context.Background()
	old, err := ts.Token(ctx, apiAudience)
	require.NoError(t, err)

	release := srv.Hold()
	clock.Advance(56 * time.Minute)
	for range 200 {
		tok, err := ts.Token(ctx, apiAudience)
		require.NoError(t, err)
		require.Equal(t, old.Value(), tok.Value())
	}
	require.Eventually(t, func() bool { return srv.Calls() == 2 }, 10*time.Second, time.Millisecond)
	release()
	settle(ts)

	fresh, err := ts.Token(ctx, apiAudience)
	require.NoError(t, err)
	assert.NotEqual(t, old.Value(), fresh.Value())
	assert.Equal(t, 2, srv.Calls(), "200 callers in the window made exactly one refresh")
}

func TestWireRefreshFailuresFollowTheBackoff(t *testing.T) {
	ts, srv, clock := newWireSource(t, WithDuration(time.Hour), WithRefreshSkew(5*time.Minute))
	ctx := context.Background()
	old, err := ts.Token(ctx, apiAudience)
	require.NoError(t, err)

	srv.FailAll("Throttling")
	clock.Advance(time.Hour - 5*time.Minute - 30*time.Second) // the window opens
	start := clock.Now()
	var errorsSeen int
	// One request a second, through the window to the hard expiry.
	for clock.Now().Before(old.Expiry.Add(-expiryMargin)) {
		if _, err := ts.Token(ctx, apiAudience); err != nil {
			errorsSeen++
		}
		settle(ts)
		clock.Advance(time.Second)
	}
	assert.Zero(t, errorsSeen, "no caller saw the outage")
	// 320 s of window: attempts at 0, 1, 3, 7, 15, 31, 61, 91, ... 301 s.
	assert.Equal(t, 1+15, srv.Calls(), "STS calls follow the backoff, not the 320 requests (window began %v)", start)

	_, err = ts.Token(ctx, apiAudience)
	var api smithy.APIError
	require.ErrorAs(t, err, &api, "past the hard expiry the error surfaces")
	assert.Equal(t, "Throttling", api.ErrorCode())
}
