package stsauth

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
	"github.com/go-jose/go-jose/v4/jwt"
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
	useClock(ts, clock)
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

// TestWireClockOffsetNeverServesExpiredTokens runs two token lifetimes
// against an emulator whose clock is 5 minutes ahead of or behind the local
// one: every token served is unexpired by the emulator's clock (a verifier
// sharing it would accept it), and the source refreshes once per lifetime,
// not constantly.
func TestWireClockOffsetNeverServesExpiredTokens(t *testing.T) {
	for _, tc := range []struct {
		offset, duration time.Duration
		maxCalls         int
	}{
		{-5 * time.Minute, time.Hour, 3},
		{5 * time.Minute, time.Hour, 3},
		{-5 * time.Minute, 5 * time.Minute, 5},
		{5 * time.Minute, 5 * time.Minute, 5},
	} {
		t.Run(fmt.Sprintf("offset=%v/duration=%v", tc.offset, tc.duration), func(t *testing.T) {
			t.Parallel()
			clock := newFakeClock()
			srv := ststest.NewUnstartedServer()
			srv.Now = func() time.Time { return clock.Now().Add(tc.offset) }
			srv.Start()
			t.Cleanup(srv.Close)
			ts, err := NewTokenSource(srv.Client(func(o *sts.Options) { o.RetryMaxAttempts = 1 }), WithDuration(tc.duration))
			require.NoError(t, err)
			useClock(ts, clock)
			t.Cleanup(func() { ts.Close() })

			step := tc.duration / 360
			for end := clock.Now().Add(2 * tc.duration); clock.Now().Before(end); clock.Advance(step) {
				tok, err := ts.Token(context.Background(), apiAudience)
				require.NoError(t, err)
				settle(ts)
				exp := claimTime(t, tok.Value(), "exp")
				remoteNow := clock.Now().Add(tc.offset)
				require.True(t, remoteNow.Before(exp), "served a token expired at %v at emulator time %v", exp, remoteNow)
				require.False(t, tok.Expiry.After(clock.Now().Add(tc.duration)), "Expiry %v is beyond a lifetime from now", tok.Expiry)
			}
			assert.LessOrEqual(t, srv.Calls(), tc.maxCalls)
			assert.GreaterOrEqual(t, srv.Calls(), 2)
		})
	}
}

// claimTime returns a NumericDate claim of a JWT, unverified.
func claimTime(t *testing.T, token, name string) time.Time {
	t.Helper()
	parsed, err := jwt.ParseSigned(token, signatureAlgorithms)
	require.NoError(t, err)
	var claims map[string]any
	require.NoError(t, parsed.UnsafeClaimsWithoutVerification(&claims))
	v, ok := claims[name].(float64)
	require.True(t, ok, "claim %s", name)
	return time.Unix(int64(v), 0)
}

// TestExpiryComesFromTheTokenNotFromTrust: an Expiration or an exp claim far
// in the future does not keep a token served past the shortest of its
// claimed lifetime, the requested duration and STS's Expiration.
func TestExpiryComesFromTheTokenNotFromTrust(t *testing.T) {
	far := time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name         string
		exp, expirat func(iat time.Time) time.Time
		lifetime     time.Duration
	}{
		{"Expiration in year 9999", func(iat time.Time) time.Time { return iat.Add(15 * time.Minute) }, func(time.Time) time.Time { return far }, 15 * time.Minute},
		{"exp in year 9999", func(time.Time) time.Time { return far }, func(iat time.Time) time.Time { return iat.Add(20 * time.Minute) }, 20 * time.Minute},
		{"both in year 9999", func(time.Time) time.Time { return far }, func(time.Time) time.Time { return far }, time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			calls := 0
			client := clientFunc(func(context.Context, *sts.GetWebIdentityTokenInput, ...func(*sts.Options)) (*sts.GetWebIdentityTokenOutput, error) {
				calls++
				// STS's clock is a day behind: only differences count.
				iat := clock.Now().Add(-24 * time.Hour)
				jwt := testJWT(calls, iat, tc.exp(iat))
				return &sts.GetWebIdentityTokenOutput{WebIdentityToken: &jwt, Expiration: new(tc.expirat(iat))}, nil
			})
			ts, err := NewTokenSource(client, WithDuration(time.Hour))
			require.NoError(t, err)
			t.Cleanup(func() { ts.Close() })
			useClock(ts, clock)
			ts.jitter = func(time.Duration) time.Duration { return 0 }
			start := clock.Now()
			tok, err := ts.Token(context.Background(), apiAudience)
			require.NoError(t, err)
			assert.Equal(t, start.Add(tc.lifetime), tok.Expiry)

			clock.Advance(tc.lifetime - expiryMargin)
			tok, err = ts.Token(context.Background(), apiAudience)
			require.NoError(t, err)
			assert.Equal(t, 2, calls, "the first token is not served within the margin of its real expiry")
			assert.Equal(t, clock.Now().Add(tc.lifetime), tok.Expiry)
		})
	}
}

func parseForTest(token string) (*jwt.JSONWebToken, error) {
	return jwt.ParseSigned(token, signatureAlgorithms)
}
