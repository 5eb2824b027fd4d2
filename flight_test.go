package stsauth

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/stsauth/stsauth/ststest"
)

func distinctAudience(i int) Audience { return MustAudience(fmt.Sprintf("https://h%d.example.com", i)) }

func TestFetchesInFlightAreBounded(t *testing.T) {
	ts, fake, _ := newTestSource(t, WithMaxConcurrentFetches(4))
	gate := make(chan struct{})
	started := make(chan struct{}, 100)
	fake.set(func(f *fakeSTS) { f.gate, f.started = gate, started })

	// 40 callers of 40 sets, each willing to wait until released.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := ts.Token(ctx, distinctAudience(i))
			errs <- err
		}()
	}
	for range 4 {
		<-started
	}
	// Callers beyond the bound wait in their own goroutines: no fetch
	// goroutine is started for them, and STS sees 4 calls.
	assert.EqualValues(t, 4, ts.tracked.Load())
	assert.Equal(t, 4, fake.Calls())

	// A caller whose context ends while it waits for a slot gives up then.
	short, cancelShort := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancelShort()
	_, err := ts.Token(short, distinctAudience(1000))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Equal(t, 4, fake.Calls())

	close(gate)
	wg.Wait()
	cancel()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	assert.Equal(t, 40, fake.Calls(), "one call per set")
}

func TestCallersOfOneSetShareAFlightWaitingForASlot(t *testing.T) {
	ts, fake, _ := newTestSource(t, WithMaxConcurrentFetches(1))
	gate := make(chan struct{})
	started := make(chan struct{}, 10)
	fake.set(func(f *fakeSTS) { f.gate, f.started = gate, started })
	go func() { _, _ = ts.Token(context.Background(), distinctAudience(0)) }()
	<-started // the only slot is taken

	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := ts.Token(context.Background(), apiAudience)
			assert.NoError(t, err)
		}()
	}
	close(gate)
	wg.Wait()
	assert.Equal(t, 2, fake.Calls(), "ten callers of one set, one call")
}

func TestSourceWideFailuresBackOffEverySet(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		wide bool
	}{
		{"Throttling", &smithy.GenericAPIError{Code: "Throttling"}, true},
		{"InvalidClientTokenId", &smithy.GenericAPIError{Code: "InvalidClientTokenId"}, true},
		{"ExpiredToken", &smithy.GenericAPIError{Code: "ExpiredToken"}, true},
		{"SignatureDoesNotMatch", &smithy.GenericAPIError{Code: "SignatureDoesNotMatch"}, true},
		{"federation disabled", &smithy.GenericAPIError{Code: "OutboundWebIdentityFederationDisabledException"}, true},
		{"network", &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}, true},
		{"timeout", context.DeadlineExceeded, true},
		{"credentials expiring", fmt.Errorf("%w: soon", ErrCredentialsExpiring), true},
		{"AccessDenied is about the set", &smithy.GenericAPIError{Code: "AccessDenied"}, false},
		{"ValidationError is about the set", &smithy.GenericAPIError{Code: "ValidationError"}, false},
		{"a bad token is about the call", errNotCompactJWS, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts, fake, clock := newTestSource(t)
			fake.set(func(f *fakeSTS) { f.fail = tc.err })
			ctx := context.Background()
			for i := range 100 {
				_, err := ts.Token(ctx, distinctAudience(i))
				require.ErrorIs(t, err, tc.err)
			}
			if !tc.wide {
				assert.Equal(t, 100, fake.Calls(), "a failure about one set backs off that set only")
				return
			}
			assert.Equal(t, 1, fake.Calls(), "one STS call, not one per set")

			// When the backoff ends (1 s with the test's jitter) one probe
			// goes through; the others fail fast until it succeeds.
			clock.Advance(time.Second)
			for i := range 100 {
				_, err := ts.Token(ctx, distinctAudience(1000+i))
				require.Error(t, err)
			}
			assert.Equal(t, 2, fake.Calls())

			fake.set(func(f *fakeSTS) { f.fail = nil })
			clock.Advance(2 * time.Second)
			for i := range 10 {
				_, err := ts.Token(ctx, distinctAudience(2000+i))
				require.NoError(t, err)
			}
			assert.Equal(t, 12, fake.Calls(), "after a success every set fetches again")
		})
	}
}

// A per-set answer from STS (here AccessDenied for one set) proves that
// whatever backed off the whole source is over.
func TestPerSetFailureEndsTheSourceBackoff(t *testing.T) {
	ts, fake, clock := newTestSource(t)
	ctx := context.Background()
	fake.set(func(f *fakeSTS) { f.fail = &smithy.GenericAPIError{Code: "Throttling"} })
	_, err := ts.Token(ctx, distinctAudience(0))
	require.Error(t, err)
	clock.Advance(time.Second)
	fake.set(func(f *fakeSTS) { f.fail = &smithy.GenericAPIError{Code: "AccessDenied"} })
	_, err = ts.Token(ctx, distinctAudience(1)) // the probe
	require.Error(t, err)
	// Were the source still backing off, other sets would be let through
	// one probe at a time.
	assert.Zero(t, ts.backoff.retryAt.Load(), "the source backoff is over")
	_, err = ts.backoff.admit(clock.Now())
	assert.NoError(t, err)
}

// askAll asks ts for n distinct audience sets at once, each caller in its
// own goroutine, and returns once every set has a flight planned or running
// (its leader holds a slot or waits for one), with the channel the callers'
// errors arrive on.
func askAll(t *testing.T, ts *TokenSource, n int) <-chan error {
	t.Helper()
	errs := make(chan error, n)
	for i := range n {
		go func() {
			_, err := ts.Token(context.Background(), distinctAudience(i))
			errs <- err
		}()
	}
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; i < n; {
		if e := ts.cache.get(distinctAudience(i).key); e != nil && e.refreshing.Load() {
			i++
			continue
		}
		if time.Now().After(deadline) {
			t.Fatalf("set %d has no flight after 30 s", i)
		}
		runtime.Gosched()
	}
	return errs
}

// Callers admitted before a source-wide backoff began, and still waiting for
// a slot when it did, fail at once with the backoff's error instead of
// calling STS: 200 sets asked for at once cost the first wave of 32 calls
// (DefaultMaxConcurrentFetches), not 200. Over the wire, STS holds every
// call until the whole burst waits, then answers with the error.
func TestQueuedCallersHonourTheSourceBackoff(t *testing.T) {
	const sets = 200
	for _, code := range []string{"InvalidClientTokenId", "Throttling"} {
		t.Run(code+"/fake", func(t *testing.T) {
			ts, fake, _ := newTestSource(t)
			gate := make(chan struct{})
			fake.set(func(f *fakeSTS) { f.gate, f.fail = gate, &smithy.GenericAPIError{Code: code} })
			errs := askAll(t, ts, sets)
			close(gate)
			for range sets {
				var api smithy.APIError
				require.ErrorAs(t, <-errs, &api)
				assert.Equal(t, code, api.ErrorCode())
			}
			assert.Equal(t, DefaultMaxConcurrentFetches, fake.Calls(), "the first wave only")
		})
		t.Run(code+"/ststest", func(t *testing.T) {
			srv := ststest.NewServer()
			t.Cleanup(srv.Close)
			srv.FailAll(code)
			release := srv.Hold()
			// One attempt per fetch: the SDK's own retries of Throttling
			// would multiply every call by three.
			client := srv.Client(func(o *sts.Options) { o.RetryMaxAttempts = 1 })
			ts, err := NewTokenSource(client)
			require.NoError(t, err)
			useClock(ts, newFakeClock()) // no probe: the backoff never ends
			t.Cleanup(func() { ts.Close() })
			errs := askAll(t, ts, sets)
			release()
			for range sets {
				var api smithy.APIError
				require.ErrorAs(t, <-errs, &api)
				assert.Equal(t, code, api.ErrorCode())
			}
			assert.LessOrEqual(t, srv.Calls(), 40)
			assert.Equal(t, DefaultMaxConcurrentFetches, srv.Calls(), "the first wave only")
		})
	}
}

// The fetch timeout bounds the whole wait for a token, the wait for a slot
// included: with STS hanging, 4 slots and 40 sets, every caller gets an
// error when the timeout has passed since it asked, not one fetch timeout
// per wave of 4.
func TestFetchTimeoutBoundsTheWaitForASlot(t *testing.T) {
	ts, fake, clock := newTestSource(t, WithMaxConcurrentFetches(4), WithFetchTimeout(time.Minute))
	clock.mu.Lock()
	clock.firing = true
	clock.mu.Unlock()
	started := make(chan struct{}, 40)
	fake.set(func(f *fakeSTS) { f.gate, f.started = make(chan struct{}), started }) // never released
	errs := askAll(t, ts, 40)
	// The 4 slots are taken by calls STS holds. askAll only knows every
	// set has a flight: a leader may have its slot and not yet have called,
	// or not yet have taken a free slot, when the timeout fires (and then
	// rightly gives up), so the count below would be 3 under load.
	for range 4 {
		<-started
	}

	clock.Advance(time.Minute - time.Second)
	select {
	case err := <-errs:
		t.Fatalf("a caller gave up before the fetch timeout: %v", err)
	default:
	}
	clock.Advance(time.Second)
	for range 40 {
		select {
		case err := <-errs:
			require.ErrorIs(t, err, context.DeadlineExceeded)
			var te *TokenError
			require.ErrorAs(t, err, &te)
			assert.Contains(t, err.Error(), "within the fetch timeout of 1m0s")
		case <-time.After(10 * time.Second):
			t.Fatal("a caller still waits past the fetch timeout")
		}
	}
	assert.Equal(t, 4, fake.Calls(), "callers that never got a slot made no call")
}
