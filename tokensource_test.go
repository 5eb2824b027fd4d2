package stsauth

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// No test may reach the real instance metadata service: one that asks
	// it without pointing the SDK at a fake (ststest.IMDS) is refused on
	// loopback at once.
	if os.Getenv("AWS_EC2_METADATA_SERVICE_ENDPOINT") == "" {
		os.Setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:1")
	}
	goleak.VerifyTestMain(m)
}

// fakeClock is a settable clock shared by a TokenSource and fakeSTS. Its
// timers fire only when firing is set (scheduler tests); otherwise they
// never fire, so the scheduler of other tests never starts a refresh.
type fakeClock struct {
	mu     sync.Mutex
	t      time.Time
	firing bool
	timers map[*fakeTimer]struct{}
}

type fakeTimer struct {
	at    time.Time
	ch    chan time.Time
	fired func() // called before ch receives, if not nil
}

func (ft *fakeTimer) fire(now time.Time) {
	if ft.fired != nil {
		ft.fired()
	}
	ft.ch <- now
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC), timers: map[*fakeTimer]struct{}{}}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock and fires the timers it passes. It returns how
// many fired.
func (c *fakeClock) Advance(d time.Duration) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	fired := 0
	for ft := range c.timers {
		if !ft.at.After(c.t) {
			ft.fire(c.t)
			delete(c.timers, ft)
			fired++
		}
	}
	return fired
}

// NextTimer returns the earliest armed timer's moment.
func (c *fakeClock) NextTimer() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var next time.Time
	for ft := range c.timers {
		if next.IsZero() || ft.at.Before(next) {
			next = ft.at
		}
	}
	return next, !next.IsZero()
}

// TimerAt is the TokenSource's timerAt.
func (c *fakeClock) TimerAt(at time.Time) (<-chan time.Time, func() bool) {
	return c.timerAtNotify(at, nil)
}

// timerAtNotify is TimerAt, calling fired (if not nil) when the timer fires,
// before its channel receives.
func (c *fakeClock) timerAtNotify(at time.Time, fired func()) (<-chan time.Time, func() bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.firing {
		return nil, func() bool { return false }
	}
	ft := &fakeTimer{at: at, ch: make(chan time.Time, 1), fired: fired}
	if !at.After(c.t) {
		ft.fire(c.t)
		return ft.ch, func() bool { return false }
	}
	c.timers[ft] = struct{}{}
	return ft.ch, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		_, ok := c.timers[ft]
		delete(c.timers, ft)
		return ok
	}
}

// useClock makes ts run on clock, and refresh first tokens at the usual
// moment rather than spread over their lifetime, so that tests can count
// refreshes.
func useClock(ts *TokenSource, clock *fakeClock) {
	ts.now, ts.realClock = clock.Now, false
	ts.timerAt = clock.TimerAt
	ts.spread = func(time.Duration) time.Duration { return 0 }
}

// fakeSTS is an in-memory GetWebIdentityToken that mints numbered
// pseudo-tokens. It can fail, and it can block each call until released, to
// prove that one fetch serves many waiters.
type fakeSTS struct {
	clock *fakeClock

	mu       sync.Mutex
	calls    int
	lifetime time.Duration // 0: the requested duration
	fail     error         // returned by every call while set
	gate     chan struct{} // while non-nil, calls wait for it to close
	inputs   []*sts.GetWebIdentityTokenInput

	started chan struct{} // receives one value per call, if non-nil
}

func (f *fakeSTS) GetWebIdentityToken(ctx context.Context, in *sts.GetWebIdentityTokenInput, _ ...func(*sts.Options)) (*sts.GetWebIdentityTokenOutput, error) {
	f.mu.Lock()
	f.calls++
	n := f.calls
	f.inputs = append(f.inputs, in)
	gate, fail, lifetime, started := f.gate, f.fail, f.lifetime, f.started
	f.mu.Unlock()
	if started != nil {
		started <- struct{}{}
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if fail != nil {
		return nil, fail
	}
	if lifetime == 0 {
		lifetime = time.Duration(*in.DurationSeconds) * time.Second
	}
	iat := f.clock.Now()
	exp := iat.Add(lifetime)
	jwt := testJWT(n, iat, exp)
	return &sts.GetWebIdentityTokenOutput{WebIdentityToken: &jwt, Expiration: &exp}, nil
}

// testJWT returns an unsigned-in-spirit compact JWS (the signature is
// "sig") numbered n, with iat and exp claims, as STS mints them.
func testJWT(n int, iat, exp time.Time) string {
	b64 := base64.RawURLEncoding.EncodeToString
	return b64([]byte(`{"alg":"RS256","typ":"JWT"}`)) + "." +
		b64(fmt.Appendf(nil, `{"iat":%d,"exp":%d,"jti":"%d"}`, iat.Unix(), exp.Unix(), n)) + "." +
		b64([]byte("sig"))
}

func (f *fakeSTS) Calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func (f *fakeSTS) set(fn func(f *fakeSTS)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// newTestSource returns a TokenSource over a fakeSTS sharing a fake clock, with
// jitter that always takes the largest value so schedules are exact.
func newTestSource(t *testing.T, opts ...Option) (*TokenSource, *fakeSTS, *fakeClock) {
	t.Helper()
	clock := newFakeClock()
	fake := &fakeSTS{clock: clock}
	ts, err := NewTokenSource(fake, opts...)
	require.NoError(t, err)
	useClock(ts, clock)
	ts.jitter = func(max time.Duration) time.Duration { return max }
	t.Cleanup(func() { ts.Close() })
	return ts, fake, clock
}

// settle waits, without sleeping, until no fetch or refresh of ts runs and
// its scheduler, if started, sleeps having seen every change (see isQuiet),
// or ts is closed and idle. Tests call it only when no other goroutine is
// calling the source.
func settle(ts *TokenSource) {
	// Not ts.wg.Wait: the scheduler may start a refresh (wg.Add from zero)
	// while the test waits, which a WaitGroup forbids, and a refresh the
	// scheduler is about to start is work the test must wait for too.
	deadline := time.Now().Add(30 * time.Second)
	for !isQuiet(ts) && !(ts.closed.Load() && ts.tracked.Load() == 0) {
		if time.Now().After(deadline) {
			panic("settle: the token source did not become quiet in 30 s")
		}
		runtime.Gosched()
	}
}

var apiAudience = MustAudience("https://api.example.com")

func TestTokenIsCachedPerAudienceSet(t *testing.T) {
	ts, fake, _ := newTestSource(t)
	ctx := context.Background()

	first, err := ts.Token(ctx, apiAudience)
	require.NoError(t, err)
	again, err := ts.Token(ctx, apiAudience)
	require.NoError(t, err)
	assert.Equal(t, first.Value(), again.Value(), "second call should be served from the cache")
	assert.Equal(t, 1, fake.Calls())

	_, err = ts.Token(ctx, MustAudience("https://api.example.com", "https://b.example.com"))
	require.NoError(t, err)
	_, err = ts.Token(ctx, MustAudience("https://b.example.com", "https://api.example.com"))
	require.NoError(t, err)
	assert.Equal(t, 2, fake.Calls(), "one call per distinct set, whatever the order")
}

func TestTokenSendsConfiguredRequest(t *testing.T) {
	ts, fake, _ := newTestSource(t,
		WithSigningAlgorithm(ES384),
		WithDuration(15*time.Minute),
		WithTags(map[string]string{"team": "payments", "env": "prod"}),
	)
	_, err := ts.Token(context.Background(), MustAudience("b", "a"))
	require.NoError(t, err)

	in := fake.inputs[0]
	assert.Equal(t, []string{"a", "b"}, in.Audience)
	assert.Equal(t, ES384, *in.SigningAlgorithm)
	assert.EqualValues(t, 900, *in.DurationSeconds)
	require.Len(t, in.Tags, 2)
	assert.Equal(t, "env", *in.Tags[0].Key)
	assert.Equal(t, "prod", *in.Tags[0].Value)
	assert.Equal(t, "team", *in.Tags[1].Key)
}

func TestConcurrentFirstCallsShareOneFetch(t *testing.T) {
	ts, fake, _ := newTestSource(t)
	gate := make(chan struct{})
	fake.set(func(f *fakeSTS) { f.gate = gate })

	const callers = 1000
	var wg sync.WaitGroup
	tokens := make([]string, callers)
	errs := make([]error, callers)
	for i := range callers {
		wg.Go(func() {
			tok, err := ts.Token(context.Background(), apiAudience)
			tokens[i], errs[i] = tok.Value(), err
		})
	}
	// Release the one STS call only once every caller is waiting on it:
	// none can have been served yet, since the call has not returned.
	require.Eventually(t, func() bool { return fake.Calls() == 1 }, 10*time.Second, time.Millisecond)
	close(gate)
	wg.Wait()

	assert.Equal(t, 1, fake.Calls())
	for i := range callers {
		require.NoError(t, errs[i])
		require.Equal(t, tokens[0], tokens[i])
	}
}

func TestCancelledCallerDoesNotFailOtherWaiters(t *testing.T) {
	ts, fake, _ := newTestSource(t)
	gate := make(chan struct{})
	started := make(chan struct{}, 1)
	fake.set(func(f *fakeSTS) { f.gate, f.started = gate, started })

	ctx, cancel := context.WithCancel(context.Background())
	impatient := make(chan error, 1)
	go func() {
		_, err := ts.Token(ctx, apiAudience)
		impatient <- err
	}()
	<-started // the shared fetch is under way, started by the impatient caller

	patient := make(chan error, 1)
	go func() {
		_, err := ts.Token(context.Background(), apiAudience)
		patient <- err
	}()

	cancel()
	err := <-impatient
	require.ErrorIs(t, err, context.Canceled, "the cancelled caller returns at once")
	var te *TokenError
	require.ErrorAs(t, err, &te)
	assert.Equal(t, apiAudience, te.Audience)

	close(gate)
	require.NoError(t, <-patient, "the fetch carried on for the other waiter")
	assert.Equal(t, 1, fake.Calls())
}

func TestRefreshAheadServesCachedTokenWhileOneRefreshRuns(t *testing.T) {
	ts, fake, clock := newTestSource(t, WithDuration(time.Hour), WithRefreshSkew(5*time.Minute))
	ctx := context.Background()
	old, err := ts.Token(ctx, apiAudience)
	require.NoError(t, err)

	// Into the refresh window: skew 5m plus the largest jitter (10% of it).
	clock.Advance(time.Hour - 5*time.Minute - 30*time.Second)
	gate := make(chan struct{})
	started := make(chan struct{}, 1)
	fake.set(func(f *fakeSTS) { f.gate, f.started = gate, started })

	for range 100 {
		tok, err := ts.Token(ctx, apiAudience)
		require.NoError(t, err)
		require.Equal(t, old.Value(), tok.Value(), "callers get the cached token while STS is blocked")
	}
	<-started
	assert.Equal(t, 2, fake.Calls(), "exactly one background refresh")

	close(gate)
	settle(ts)
	fresh, err := ts.Token(ctx, apiAudience)
	require.NoError(t, err)
	assert.NotEqual(t, old.Value(), fresh.Value(), "the refreshed token is served once it arrives")
	assert.True(t, fresh.Expiry.After(old.Expiry))
	assert.Equal(t, 2, fake.Calls())
}

func TestRefreshIsNotStartedBeforeTheWindow(t *testing.T) {
	ts, fake, clock := newTestSource(t, WithDuration(time.Hour), WithRefreshSkew(5*time.Minute))
	_, err := ts.Token(context.Background(), apiAudience)
	require.NoError(t, err)
	clock.Advance(time.Hour - 5*time.Minute - 31*time.Second) // just before skew + max jitter
	_, err = ts.Token(context.Background(), apiAudience)
	require.NoError(t, err)
	settle(ts)
	assert.Equal(t, 1, fake.Calls())
}

func TestRefreshFailureKeepsServingAndBacksOff(t *testing.T) {
	ts, fake, clock := newTestSource(t, WithDuration(time.Hour), WithRefreshSkew(5*time.Minute))
	ctx := context.Background()
	old, err := ts.Token(ctx, apiAudience)
	require.NoError(t, err)

	throttled := &smithy.GenericAPIError{Code: "Throttling", Message: "Rate exceeded"}
	fake.set(func(f *fakeSTS) { f.fail = throttled })
	clock.Advance(time.Hour - 5*time.Minute - 30*time.Second) // refresh window opens

	// Drive the source with a request every 100ms until the token's hard
	// expiry (exp - 10s margin). Callers see no error, and STS sees one
	// attempt per backoff window: 1s, 2s, 4s, 8s, 16s, then 30s capped
	// (jitter is pinned at its largest value in these tests).
	var attemptsAt []time.Duration
	start := clock.Now()
	hardExpiry := old.Expiry.Add(-expiryMargin)
	for clock.Now().Before(hardExpiry) {
		before := fake.Calls()
		tok, err := ts.Token(ctx, apiAudience)
		require.NoError(t, err, "at +%v", clock.Now().Sub(start))
		require.Equal(t, old.Value(), tok.Value())
		settle(ts)
		if fake.Calls() > before {
			attemptsAt = append(attemptsAt, clock.Now().Sub(start))
		}
		clock.Advance(100 * time.Millisecond)
	}
	want := []time.Duration{0}
	for _, d := range []time.Duration{1, 2, 4, 8, 16, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30} {
		next := want[len(want)-1] + d*time.Second
		if next >= 5*time.Minute+20*time.Second { // the window lasts skew + jitter - margin
			break
		}
		want = append(want, next)
	}
	assert.Equal(t, want, attemptsAt)

	// Past the hard expiry the old token is never served.
	_, err = ts.Token(ctx, apiAudience)
	require.Error(t, err)
	var api smithy.APIError
	require.ErrorAs(t, err, &api, "the error reaches the STS error code")
	assert.Equal(t, "Throttling", api.ErrorCode())
	assert.NotContains(t, err.Error(), old.Value())

	// STS recovers: the next attempt after the backoff succeeds.
	fake.set(func(f *fakeSTS) { f.fail = nil })
	clock.Advance(backoffMax)
	fresh, err := ts.Token(ctx, apiAudience)
	require.NoError(t, err)
	assert.NotEqual(t, old.Value(), fresh.Value())
}

func TestFailingSTSWithNoTokenIsNegativelyCached(t *testing.T) {
	ts, fake, clock := newTestSource(t)
	ctx := context.Background()
	denied := &smithy.GenericAPIError{Code: "AccessDenied", Message: "not authorized"}
	fake.set(func(f *fakeSTS) { f.fail = denied })

	for range 1000 {
		_, err := ts.Token(ctx, apiAudience)
		require.ErrorAs(t, err, new(smithy.APIError))
	}
	assert.Equal(t, 1, fake.Calls(), "a storm of requests is one STS call until the backoff runs out")

	clock.Advance(backoffBase) // first window: 1s
	_, err := ts.Token(ctx, apiAudience)
	require.Error(t, err)
	assert.Equal(t, 2, fake.Calls())

	clock.Advance(backoffBase) // second window is 2s: not yet
	_, err = ts.Token(ctx, apiAudience)
	require.Error(t, err)
	assert.Equal(t, 2, fake.Calls())

	fake.set(func(f *fakeSTS) { f.fail = nil })
	clock.Advance(backoffBase)
	_, err = ts.Token(ctx, apiAudience)
	require.NoError(t, err)
	assert.Equal(t, 3, fake.Calls())
}

func TestShortLivedTokenRefreshesHalfWay(t *testing.T) {
	ts, fake, clock := newTestSource(t, WithDuration(time.Hour), WithRefreshSkew(5*time.Minute))
	fake.set(func(f *fakeSTS) { f.lifetime = 4 * time.Minute }) // STS grants less than the skew
	ctx := context.Background()
	_, err := ts.Token(ctx, apiAudience)
	require.NoError(t, err)

	clock.Advance(2*time.Minute - time.Second)
	_, err = ts.Token(ctx, apiAudience)
	require.NoError(t, err)
	settle(ts)
	assert.Equal(t, 1, fake.Calls(), "not refreshing constantly")

	clock.Advance(time.Second)
	_, err = ts.Token(ctx, apiAudience)
	require.NoError(t, err)
	settle(ts)
	assert.Equal(t, 2, fake.Calls(), "refreshed at half its lifetime")
}

func TestCacheEvictsLeastRecentlyUsedAndRefetches(t *testing.T) {
	const size = 16
	ts, fake, _ := newTestSource(t, WithCacheSize(size))
	ctx := context.Background()
	aud := func(i int) Audience { return MustAudience(fmt.Sprintf("https://h%d.example.com", i)) }

	hot := aud(0)
	_, err := ts.Token(ctx, hot)
	require.NoError(t, err)
	for i := 1; i <= 10*size; i++ {
		_, err := ts.Token(ctx, aud(i))
		require.NoError(t, err)
		_, err = ts.Token(ctx, hot) // keep one set in use
		require.NoError(t, err)
		require.LessOrEqual(t, ts.cache.len(), int64(size))
	}
	assert.Equal(t, 1+10*size, fake.Calls(), "the set in use was never evicted")

	_, err = ts.Token(ctx, aud(1)) // long evicted
	require.NoError(t, err)
	assert.Equal(t, 2+10*size, fake.Calls(), "an evicted set is fetched again")
}

func TestCacheEvictionOrder(t *testing.T) {
	ts, _, _ := newTestSource(t, WithCacheSize(2))
	ctx := context.Background()
	a, b, c := MustAudience("a"), MustAudience("b"), MustAudience("c")
	for _, aud := range []Audience{a, b, a, c} { // a is used again, so b is least recent
		_, err := ts.Token(ctx, aud)
		require.NoError(t, err)
	}
	assert.NotNil(t, ts.cache.get(a.key))
	assert.Nil(t, ts.cache.get(b.key))
	assert.NotNil(t, ts.cache.get(c.key))
}

func TestCloseStopsBackgroundWork(t *testing.T) {
	ts, fake, clock := newTestSource(t)
	ctx := context.Background()
	_, err := ts.Token(ctx, apiAudience)
	require.NoError(t, err)

	// Leave a refresh blocked in STS: Close must cancel it, not wait forever.
	fake.set(func(f *fakeSTS) { f.gate = make(chan struct{}) })
	clock.Advance(58 * time.Minute)
	_, err = ts.Token(ctx, apiAudience)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return fake.Calls() == 2 }, 10*time.Second, time.Millisecond)

	require.NoError(t, ts.Close())
	require.NoError(t, ts.Close(), "Close is idempotent")
	goleak.VerifyNone(t, goleak.IgnoreCurrent())

	_, err = ts.Token(ctx, apiAudience)
	require.ErrorIs(t, err, ErrClosed)
}

// A refresh that Close cancels is shutdown, not an STS failure: no warning,
// no refresh failure, and waiting callers see ErrClosed.
func TestCloseIsNotAFetchFailure(t *testing.T) {
	var logged bytes.Buffer
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { mp.Shutdown(context.Background()) })
	ts, fake, clock := newTestSource(t, WithLogger(slog.New(slog.NewTextHandler(&logged, nil))), WithMeterProvider(mp))
	ctx := context.Background()
	_, err := ts.Token(ctx, apiAudience)
	require.NoError(t, err)

	started := make(chan struct{}, 2)
	fake.set(func(f *fakeSTS) { f.gate, f.started = make(chan struct{}), started })
	clock.Advance(58 * time.Minute)
	_, err = ts.Token(ctx, apiAudience) // starts a background refresh
	require.NoError(t, err)
	waiting := make(chan error, 1)
	go func() {
		_, err := ts.Token(ctx, distinctAudience(1)) // waits for its first token
		waiting <- err
	}()
	<-started
	<-started

	require.NoError(t, ts.Close())
	require.ErrorIs(t, <-waiting, ErrClosed)
	assert.NotContains(t, logged.String(), "fetch failed")
	assert.Zero(t, total(collect(t, reader)["token.refresh.failure.count"]))
}

func TestTokenNeverShowsItsJWT(t *testing.T) {
	ts, _, _ := newTestSource(t)
	tok, err := ts.Token(context.Background(), apiAudience)
	require.NoError(t, err)
	jwt := tok.Value()
	require.NotEmpty(t, jwt)

	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("got", "token", tok)
	encoded, err := json.Marshal(map[string]any{"token": tok})
	require.NoError(t, err)
	for _, s := range []string{
		fmt.Sprint(tok), fmt.Sprintf("%v %+v %#v %s %q", tok, tok, tok, tok, tok),
		logged.String(), string(encoded),
	} {
		assert.NotContains(t, s, jwt)
		assert.NotContains(t, s, "eyJ")
	}
	assert.Contains(t, tok.String(), "https://api.example.com")
}

func TestNewTokenSourceValidatesOptions(t *testing.T) {
	longKey := strings.Repeat("k", MaxTagKeyLength+1)
	manyTags := map[string]string{}
	for i := range MaxTags + 1 {
		manyTags[fmt.Sprint(i)] = "v"
	}
	tests := []struct {
		name    string
		opts    []Option
		wantErr string // empty: valid
	}{
		{"defaults", nil, ""},
		{"ES384", []Option{WithSigningAlgorithm(ES384)}, ""},
		{"bad algorithm", []Option{WithSigningAlgorithm("HS256")}, `signing algorithm "HS256", want RS256 or ES384`},
		{"lowercase algorithm", []Option{WithSigningAlgorithm("rs256")}, `signing algorithm "rs256"`},
		{"shortest duration", []Option{WithDuration(time.Minute)}, ""},
		{"duration too short", []Option{WithDuration(59 * time.Second)}, "duration 59s, want whole seconds from 1m0s to 1h0m0s"},
		{"duration too long", []Option{WithDuration(time.Hour + time.Second)}, "duration 1h0m1s"},
		{"fractional duration", []Option{WithDuration(90*time.Second + time.Millisecond)}, "want whole seconds"},
		{"short duration halves default skew", []Option{WithDuration(2 * time.Minute)}, ""},
		{"zero skew", []Option{WithRefreshSkew(0)}, "refresh skew 0s, want more than 0 and less than the duration 1h0m0s"},
		{"negative skew", []Option{WithRefreshSkew(-time.Second)}, "refresh skew -1s"},
		{"skew equals duration", []Option{WithDuration(10 * time.Minute), WithRefreshSkew(10 * time.Minute)}, "refresh skew 10m0s"},
		{"tags", []Option{WithTags(map[string]string{"k": ""})}, ""},
		{"empty tag key", []Option{WithTags(map[string]string{"": "v"})}, `tag key "", want 1 to 128 characters`},
		{"long tag key", []Option{WithTags(map[string]string{longKey: "v"})}, "want 1 to 128 characters"},
		{"long tag value", []Option{WithTags(map[string]string{"k": strings.Repeat("v", 257)})}, "value of 257 characters, want at most 256"},
		{"too many tags", []Option{WithTags(manyTags)}, "51 tags, want at most 50"},
		{"cache size zero", []Option{WithCacheSize(0)}, "cache size 0, want at least 1"},
		{"fetch timeout zero", []Option{WithFetchTimeout(0)}, "fetch timeout 0s, want more than 0"},
		{"nil option and nil logger", []Option{nil, WithLogger(nil), WithMeterProvider(nil)}, ""},
		{"no mint limit", []Option{WithMintRate(0, 0)}, ""},
		{"mint rate", []Option{WithMintRate(0.5, 1)}, ""},
		{"negative mint rate", []Option{WithMintRate(-1, 10)}, "mint rate -1 a second, want 0 (no limit) or more"},
		{"NaN mint rate", []Option{WithMintRate(math.NaN(), 10)}, "mint rate NaN"},
		{"infinite mint rate", []Option{WithMintRate(math.Inf(1), 10)}, "mint rate +Inf"},
		{"mint burst zero", []Option{WithMintRate(1, 0)}, "mint burst 0, want at least 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts, err := NewTokenSource(&fakeSTS{clock: newFakeClock()}, tc.opts...)
			if tc.wantErr == "" {
				require.NoError(t, err)
				require.NoError(t, ts.Close())
				return
			}
			require.ErrorIs(t, err, ErrInvalidOption)
			assert.Contains(t, err.Error(), tc.wantErr)
			assert.True(t, strings.HasPrefix(err.Error(), "stsauth: "), err.Error())
		})
	}
}

func TestNewTokenSourceRejectsNilClient(t *testing.T) {
	_, err := NewTokenSource(nil)
	require.ErrorIs(t, err, ErrInvalidOption)
}

func TestTokenRejectsZeroAudience(t *testing.T) {
	ts, fake, _ := newTestSource(t)
	_, err := ts.Token(context.Background(), Audience{})
	require.ErrorIs(t, err, ErrInvalidAudience)
	assert.Equal(t, 0, fake.Calls())
}

func TestBadSTSAnswersAreErrors(t *testing.T) {
	clock := newFakeClock()
	now := clock.Now()
	b64 := base64.RawURLEncoding.EncodeToString
	jws := func(header, payload string) string {
		return b64([]byte(header)) + "." + b64([]byte(payload)) + "." + b64([]byte("sig"))
	}
	hour := now.Add(time.Hour)
	for _, tc := range []struct {
		name    string
		out     *sts.GetWebIdentityTokenOutput
		wantErr string
	}{
		{"no output", nil, "STS returned no token"},
		{"no token", &sts.GetWebIdentityTokenOutput{Expiration: &hour}, "STS returned no token"},
		{"no expiration", &sts.GetWebIdentityTokenOutput{WebIdentityToken: new(testJWT(1, now, hour))}, "without an expiration"},
		{"exp before iat", &sts.GetWebIdentityTokenOutput{WebIdentityToken: new(testJWT(1, now, now.Add(-time.Second))), Expiration: &hour}, "no lifetime"},
		{"expiration before iat", &sts.GetWebIdentityTokenOutput{WebIdentityToken: new(testJWT(1, now, hour)), Expiration: new(now.Add(-time.Second))}, "no lifetime"},
		{"no claims", &sts.GetWebIdentityTokenOutput{WebIdentityToken: new(jws(`{"alg":"RS256"}`, `{"sub":"x"}`)), Expiration: &hour}, "without iat and exp"},
		{"HS256", &sts.GetWebIdentityTokenOutput{WebIdentityToken: new(jws(`{"alg":"HS256"}`, `{"iat":1,"exp":2}`)), Expiration: &hour}, "not a JWS signed with RS256 or ES384"},
		{"alg none", &sts.GetWebIdentityTokenOutput{WebIdentityToken: new(jws(`{"alg":"none"}`, `{"iat":1,"exp":2}`)), Expiration: &hour}, "not a JWS signed"},
		{"payload not JSON", &sts.GetWebIdentityTokenOutput{WebIdentityToken: new(jws(`{"alg":"RS256"}`, `eyJ not json`)), Expiration: &hour}, "claims are not"},
		{"string exp", &sts.GetWebIdentityTokenOutput{WebIdentityToken: new(jws(`{"alg":"RS256"}`, `{"iat":1,"exp":"2"}`)), Expiration: &hour}, "claims are not"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := clientFunc(func(context.Context, *sts.GetWebIdentityTokenInput, ...func(*sts.Options)) (*sts.GetWebIdentityTokenOutput, error) {
				return tc.out, nil
			})
			ts, err := NewTokenSource(client)
			require.NoError(t, err)
			defer ts.Close()
			useClock(ts, clock)
			_, err = ts.Token(context.Background(), apiAudience)
			require.ErrorContains(t, err, tc.wantErr)
			assert.NotContains(t, err.Error(), "eyJ")
		})
	}
}

// clientFunc adapts a function to GetWebIdentityTokenAPIClient.
type clientFunc func(context.Context, *sts.GetWebIdentityTokenInput, ...func(*sts.Options)) (*sts.GetWebIdentityTokenOutput, error)

func (f clientFunc) GetWebIdentityToken(ctx context.Context, in *sts.GetWebIdentityTokenInput, o ...func(*sts.Options)) (*sts.GetWebIdentityTokenOutput, error) {
	return f(ctx, in, o...)
}

func TestFetchTimeoutBoundsTheSharedCall(t *testing.T) {
	var calls atomic.Int32
	hang := clientFunc(func(ctx context.Context, _ *sts.GetWebIdentityTokenInput, _ ...func(*sts.Options)) (*sts.GetWebIdentityTokenOutput, error) {
		calls.Add(1)
		<-ctx.Done()
		return nil, ctx.Err()
	})
	ts, err := NewTokenSource(hang, WithFetchTimeout(10*time.Millisecond))
	require.NoError(t, err)
	defer ts.Close()
	// The caller's own wait never times out here (a fake clock that does
	// not fire): only the fetch's timeout can end it. With the real clock a
	// loaded machine could end the caller's wait before the call started.
	useClock(ts, newFakeClock())
	_, err = ts.Token(context.Background(), apiAudience)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.EqualValues(t, 1, calls.Load())
}

// TestTokenHookSeesEveryNewToken: the hook is told of the first token, a
// scheduled refresh and a replacement after Invalidate, each once, and of
// no failed fetch.
func TestTokenHookSeesEveryNewToken(t *testing.T) {
	var mu sync.Mutex
	var seen []Token
	hook := func(tok Token) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, tok)
	}
	hooked := func() []Token {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(seen)
	}
	h := newSchedHarness(t, WithDuration(time.Hour), WithRefreshSkew(5*time.Minute), WithTokenHook(hook))
	ts, fake := h.ts, h.fake
	ctx := context.Background()

	first, err := ts.Token(ctx, apiAudience)
	require.NoError(t, err)
	require.Len(t, hooked(), 1)
	assert.Equal(t, first.Value(), hooked()[0].Value())
	assert.Equal(t, first.Expiry, hooked()[0].Expiry)

	// Used, then left to the scheduler's refresh.
	_, err = ts.Token(ctx, apiAudience)
	require.NoError(t, err)
	h.advance(t, time.Hour-5*time.Minute-30*time.Second)
	require.Equal(t, 2, fake.Calls())
	refreshed, err := ts.Token(ctx, apiAudience)
	require.NoError(t, err)
	require.Len(t, hooked(), 2)
	assert.Equal(t, refreshed.Value(), hooked()[1].Value())

	// A failed fetch is not a new token.
	require.True(t, ts.Invalidate(refreshed))
	fake.set(func(f *fakeSTS) { f.fail = errors.New("sts down") })
	_, err = ts.Token(ctx, apiAudience)
	require.Error(t, err)
	assert.Len(t, hooked(), 2)

	fake.set(func(f *fakeSTS) { f.fail = nil })
	h.advance(t, backoffMax)
	replacement, err := ts.Token(ctx, apiAudience)
	require.NoError(t, err)
	require.Len(t, hooked(), 3)
	assert.Equal(t, replacement.Value(), hooked()[2].Value())
}

// TestMonoNowWithRealClock holds the hit path's clock read, with the real
// clock, between two time.Now readings (monotonic comparisons, as the hit
// path makes), and a hit with it to the expiry of the real-clock source.
func TestMonoNowWithRealClock(t *testing.T) {
	t.Parallel()
	fake := &fakeSTS{clock: &fakeClock{t: time.Now()}}
	ts, err := NewTokenSource(fake)
	require.NoError(t, err)
	t.Cleanup(func() { ts.Close() })
	require.True(t, ts.realClock)
	for range 100 {
		before := time.Now()
		m := ts.monoNow()
		after := time.Now()
		require.False(t, m.Before(before), "monoNow before an earlier time.Now")
		require.False(t, m.After(after), "monoNow after a later time.Now")
	}
	aud := MustAudience("https://api.example.com")
	_, err = ts.Token(context.Background(), aud)
	require.NoError(t, err)
	_, err = ts.Token(context.Background(), aud)
	require.NoError(t, err)
	require.Equal(t, 1, fake.Calls(), "the second call is a hit")
	// A token past its expireAt is not served from the cache: the next
	// call fetches anew.
	e := ts.cache.get(aud.key)
	c := *e.state.Load()
	c.expireAt = time.Now()
	c.refreshAt = c.expireAt
	e.state.Store(&c)
	_, err = ts.Token(context.Background(), aud)
	require.NoError(t, err)
	assert.Equal(t, 2, fake.Calls(), "an expired token was served from the cache")
}
