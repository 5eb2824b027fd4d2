package stsauth

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/stsauth/stsauth/ststest"
)

const fallbackTimeout = 10 * time.Second

// twoRegions starts two emulators, a primary in us-east-1 and a fallback in
// us-west-2, and a source over them on a fake clock whose timers fire, with
// jitter that always takes the largest value (a region's first backoff is
// 1 s). Each client makes one attempt per call: the SDK's own retries would
// sleep on the real clock.
func twoRegions(t *testing.T, opts ...Option) (ts *TokenSource, primary, fallback *ststest.Server, clock *fakeClock) {
	t.Helper()
	start := func(region string) *ststest.Server {
		s := ststest.NewUnstartedServer()
		s.Region = region
		s.Start()
		t.Cleanup(s.Close)
		return s
	}
	primary, fallback = start("us-east-1"), start("us-west-2")
	once := func(o *sts.Options) { o.RetryMaxAttempts = 1 }
	opts = append([]Option{WithFallback(fallback.Client(once)), WithFetchTimeout(fallbackTimeout)}, opts...)
	ts, err := NewTokenSource(primary.Client(once), opts...)
	require.NoError(t, err)
	clock = newFakeClock()
	clock.firing = true
	useClock(ts, clock)
	ts.jitter = func(max time.Duration) time.Duration { return max }
	t.Cleanup(func() { ts.Close() })
	return ts, primary, fallback, clock
}

// waitFor polls cond, without sleeping, until it holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after 30 s: still waiting for %s", what)
		}
		runtime.Gosched()
	}
}

// sourceOf returns the region that minted tok: its source_region claim.
func sourceOf(t *testing.T, tok Token) string {
	t.Helper()
	parts := strings.Split(tok.Value(), ".")
	require.Len(t, parts, 3)
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	require.NoError(t, err)
	var claims struct {
		AWS struct {
			SourceRegion string `json:"source_region"`
		} `json:"https://sts.amazonaws.com/"`
	}
	require.NoError(t, json.Unmarshal(payload, &claims))
	return claims.AWS.SourceRegion
}

// With the primary down, every fetch is answered by the fallback, no
// request fails, and a source-wide backoff never starts.
func TestFallbackWhenThePrimaryFails(t *testing.T) {
	for _, tc := range []struct {
		name string
		down func(*ststest.Server)
	}{
		{"closed", (*ststest.Server).Close},
		{"InternalFailure", func(s *ststest.Server) { s.FailAll("InternalFailure") }},
		{"ServiceUnavailable", func(s *ststest.Server) { s.FailAll("ServiceUnavailable") }},
		{"Throttling", func(s *ststest.Server) { s.FailAll("Throttling") }},
		{"RegionDisabledException", func(s *ststest.Server) { s.FailAll("RegionDisabledException") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts, primary, fallback, clock := twoRegions(t)
			tc.down(primary)
			for i := range 3 {
				tok, err := ts.Token(context.Background(), distinctAudience(i))
				require.NoError(t, err)
				assert.Equal(t, "us-west-2", sourceOf(t, tok))
				assert.Zero(t, ts.backoff.retryAt.Load(), "a fetch a fallback answered backs off nothing")
			}
			assert.Equal(t, 3, fallback.Calls())
			if tc.name != "closed" {
				assert.Equal(t, 1, primary.Calls(), "the primary is skipped while it backs off")
			}
			// Its backoff (1 s) run out, the primary is tried first again.
			clock.Advance(time.Second)
			_, err := ts.Token(context.Background(), distinctAudience(3))
			require.NoError(t, err)
			assert.Equal(t, 4, fallback.Calls())
			if tc.name != "closed" {
				assert.Equal(t, 2, primary.Calls())
			}
		})
	}
}

// A hanging primary gets half the fetch timeout (two regions), then the
// fallback answers: 20 callers asking at once all get a token, none waiting
// past the fetch timeout on the source's clock.
func TestFallbackWhenThePrimaryHangs(t *testing.T) {
	ts, primary, fallback, clock := twoRegions(t)
	defer primary.Hold()()
	const sets = 20
	type result struct {
		tok Token
		err error
	}
	results := make(chan result, sets)
	for i := range sets {
		go func() {
			tok, err := ts.Token(context.Background(), distinctAudience(i))
			results <- result{tok, err}
		}()
	}
	waitFor(t, "every fetch to reach the primary", func() bool { return primary.Calls() == sets })
	select {
	case r := <-results:
		t.Fatalf("a caller returned before the primary's share ran out: %v", r.err)
	default:
	}
	require.Equal(t, sets, clock.Advance(fallbackTimeout/2), "each fetch's share timer fires, no caller's fetch timeout")
	for range sets {
		r := <-results
		require.NoError(t, r.err)
		assert.Equal(t, "us-west-2", sourceOf(t, r.tok))
	}
	assert.Equal(t, sets, fallback.Calls())
	assert.Zero(t, ts.backoff.retryAt.Load())

	// The next fetch skips the primary, which backs off, and does not wait.
	tok, err := ts.Token(context.Background(), distinctAudience(sets))
	require.NoError(t, err)
	assert.Equal(t, "us-west-2", sourceOf(t, tok))
	assert.Equal(t, sets, primary.Calls())
}

// With both regions hanging, a caller gets its error when the fetch timeout
// has passed since it asked, not later: the regions share it.
func TestFallbackStaysWithinTheFetchTimeout(t *testing.T) {
	ts, primary, fallback, clock := twoRegions(t)
	defer primary.Hold()()
	defer fallback.Hold()()
	errs := make(chan error, 1)
	go func() {
		_, err := ts.Token(context.Background(), apiAudience)
		errs <- err
	}()
	waitFor(t, "the fetch to reach the primary", func() bool { return primary.Calls() == 1 })
	clock.Advance(fallbackTimeout / 2)
	waitFor(t, "the fetch to reach the fallback", func() bool { return fallback.Calls() == 1 })
	select {
	case err := <-errs:
		t.Fatalf("the caller gave up before the fetch timeout: %v", err)
	default:
	}
	clock.Advance(fallbackTimeout / 2)
	err := <-errs
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "within the fetch timeout of 10s")
}

// Once the primary answers again it is used again: a fetch within its
// backoff goes to the fallback, the first after it probes the primary, and
// the ones after that stay there.
func TestFallbackReturnsToThePrimary(t *testing.T) {
	ts, primary, fallback, clock := twoRegions(t)
	primary.FailAll("InternalFailure")
	ask := func(i int) string {
		t.Helper()
		tok, err := ts.Token(context.Background(), distinctAudience(i))
		require.NoError(t, err)
		return sourceOf(t, tok)
	}
	assert.Equal(t, "us-west-2", ask(0))
	primary.Reset()
	assert.Equal(t, "us-west-2", ask(1), "within the primary's backoff")
	clock.Advance(time.Second)
	assert.Equal(t, "us-east-1", ask(2), "the probe")
	assert.Equal(t, "us-east-1", ask(3))
	assert.Equal(t, 3, primary.Calls())
	assert.Equal(t, 2, fallback.Calls())

	// The primary's backoff grows while it keeps failing: 1 s, then 2 s.
	primary.FailAll("ServiceUnavailable")
	assert.Equal(t, "us-west-2", ask(4)) // backoff 1 s
	clock.Advance(time.Second)
	assert.Equal(t, "us-west-2", ask(5)) // probe fails: backoff 2 s
	clock.Advance(time.Second)
	assert.Equal(t, "us-west-2", ask(6)) // skipped
	assert.Equal(t, 5, primary.Calls())
	primary.Reset()
	clock.Advance(time.Second)
	assert.Equal(t, "us-east-1", ask(7))
}

// An answer about the request is the same in every region: it is not
// tried elsewhere, and it names the region.
func TestFallbackNotOnErrorsAboutTheRequest(t *testing.T) {
	for _, code := range []string{"AccessDenied", "ValidationError", codeFederationDisabled, "InvalidClientTokenId", "JWTPayloadSizeExceededException"} {
		t.Run(code, func(t *testing.T) {
			ts, primary, fallback, _ := twoRegions(t)
			primary.FailAll(code)
			_, err := ts.Token(context.Background(), apiAudience)
			var api smithy.APIError
			require.ErrorAs(t, err, &api)
			assert.Equal(t, code, api.ErrorCode())
			assert.Contains(t, err.Error(), "in us-east-1: ")
			assert.Equal(t, 0, fallback.Calls())
			assert.Zero(t, ts.regions[0].retryAt.Load(), "the primary answered: it does not back off")
		})
	}
	t.Run("SessionDurationEscalationException", func(t *testing.T) {
		ts, primary, fallback, _ := twoRegions(t)
		primary.SetSessionExpiry(time.Now().Add(30 * time.Second))
		_, err := ts.Token(context.Background(), apiAudience)
		require.ErrorIs(t, err, ErrCredentialsExpiring)
		assert.Equal(t, 0, fallback.Calls())
	})
}

// When every region fails, the error names each, wraps the last, and the
// source backs off as without fallbacks.
func TestFallbackEveryRegionFails(t *testing.T) {
	ts, primary, fallback, _ := twoRegions(t)
	primary.FailAll("InternalFailure")
	fallback.FailAll("Throttling")
	_, err := ts.Token(context.Background(), apiAudience)
	var api smithy.APIError
	require.ErrorAs(t, err, &api)
	assert.Equal(t, "Throttling", api.ErrorCode())
	assert.Contains(t, err.Error(), "in us-west-2: ")
	assert.Contains(t, err.Error(), "(after us-east-1: ")
	assert.Contains(t, err.Error(), "InternalFailure")
	assert.NotZero(t, ts.backoff.retryAt.Load(), "the source backs off")

	// While the source backs off, callers get the error without a call.
	_, err = ts.Token(context.Background(), distinctAudience(1))
	require.Error(t, err)
	assert.Equal(t, 1, primary.Calls())
	assert.Equal(t, 1, fallback.Calls())
}

// Metrics and logs name the region that answered, and the one that failed.
func TestFallbackMetricsAndLogs(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	var logs bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ts, primary, _, clock := twoRegions(t, WithMeterProvider(mp), WithLogger(logger))
	primary.FailAll("InternalFailure")
	tok, err := ts.Token(context.Background(), apiAudience)
	require.NoError(t, err)
	primary.Reset()
	clock.Advance(time.Second)
	_, err = ts.Token(context.Background(), distinctAudience(1))
	require.NoError(t, err)

	got := collect(t, reader)
	assert.Equal(t, map[string]int64{
		`audience=https://api.example.com,region=us-west-2,result=ok`: 1,
		`audience=https://h1.example.com,region=us-east-1,result=ok`:  1,
	}, got["token.fetch.count"])
	assert.Equal(t, map[string]int64{`error_class=InternalFailure,region=us-east-1`: 1}, got["token.fetch.fallback.count"])

	out := logs.String()
	assert.Contains(t, out, `"msg":"stsauth: STS failed in a region; trying the next","audience":"[https://api.example.com]","region":"us-east-1","next_region":"us-west-2"`)
	assert.Contains(t, out, `"msg":"stsauth: web identity token fetched from a fallback region","audience":"[https://api.example.com]","region":"us-west-2"`)
	assert.Contains(t, out, `"msg":"stsauth: STS answers again in a region that failed","region":"us-east-1","consecutive_failures":1`)
	assert.NotContains(t, out, tok.Value())
}

// Without fallbacks nothing changes: no region attribute, no region in
// errors.
func TestNoFallbackNoRegion(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	ts, fake, _ := newTestSource(t, WithMeterProvider(mp))
	_, err := ts.Token(context.Background(), apiAudience)
	require.NoError(t, err)
	fake.set(func(f *fakeSTS) { f.fail = &smithy.GenericAPIError{Code: "AccessDenied"} })
	_, err = ts.Token(context.Background(), distinctAudience(1))
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "in primary")
	for k := range collect(t, reader)["token.fetch.count"] {
		assert.NotContains(t, k, "region=")
	}
}

// Only one fetch at a time probes a region whose backoff has run out; the
// others go on to the next region meanwhile.
func TestFallbackProbesOneAtATime(t *testing.T) {
	var primaryCalls, fallbackCalls atomic.Int32
	clock := newFakeClock()
	primaryFails := atomic.Bool{}
	primaryFails.Store(true)
	gate := make(chan struct{})
	primary := clientFunc(func(ctx context.Context, in *sts.GetWebIdentityTokenInput, o ...func(*sts.Options)) (*sts.GetWebIdentityTokenOutput, error) {
		if primaryCalls.Add(1) == 1 {
			return nil, &smithy.GenericAPIError{Code: "ServiceUnavailable"}
		}
		<-gate // the probe waits here
		return (&fakeSTS{clock: clock}).GetWebIdentityToken(ctx, in, o...)
	})
	fallback := clientFunc(func(ctx context.Context, in *sts.GetWebIdentityTokenInput, o ...func(*sts.Options)) (*sts.GetWebIdentityTokenOutput, error) {
		fallbackCalls.Add(1)
		return (&fakeSTS{clock: clock}).GetWebIdentityToken(ctx, in, o...)
	})
	ts, err := NewTokenSource(primary, WithFallback(fallback))
	require.NoError(t, err)
	useClock(ts, clock)
	ts.jitter = func(max time.Duration) time.Duration { return max }
	defer ts.Close()

	_, err = ts.Token(context.Background(), distinctAudience(0))
	require.NoError(t, err)
	clock.Advance(time.Second)
	probe := make(chan error, 1)
	go func() {
		_, err := ts.Token(context.Background(), distinctAudience(1))
		probe <- err
	}()
	waitFor(t, "the probe", func() bool { return primaryCalls.Load() == 2 })
	for i := 2; i < 5; i++ {
		_, err := ts.Token(context.Background(), distinctAudience(i))
		require.NoError(t, err)
	}
	assert.EqualValues(t, 2, primaryCalls.Load(), "no second probe")
	assert.EqualValues(t, 4, fallbackCalls.Load())
	close(gate)
	require.NoError(t, <-probe)
	_, err = ts.Token(context.Background(), distinctAudience(5))
	require.NoError(t, err)
	assert.EqualValues(t, 3, primaryCalls.Load(), "the primary is back")
	assert.EqualValues(t, 4, fallbackCalls.Load())
}

func TestFallbackRegionNames(t *testing.T) {
	east := sts.New(sts.Options{Region: "us-east-1"})
	other := clientFunc(nil)
	ts, err := NewTokenSource(east, WithFallback(sts.New(sts.Options{Region: "us-west-2"}), sts.New(sts.Options{Region: "us-east-1"}), other))
	require.NoError(t, err)
	defer ts.Close()
	var names []string
	for _, r := range ts.regions {
		names = append(names, r.name)
	}
	assert.Equal(t, []string{"us-east-1", "us-west-2", "us-east-1#2", "fallback3"}, names)

	_, err = NewTokenSource(east, WithFallback(east, nil))
	require.ErrorIs(t, err, ErrInvalidOption)
	assert.ErrorContains(t, err, "fallback client 2 is nil")
}

// classify sorts errors as the SDK returns them: known codes by code,
// unknown ones by HTTP status, no answer as the network's.
func TestClassify(t *testing.T) {
	status := func(code int, err error) error {
		return &smithy.OperationError{ServiceID: "STS", OperationName: "GetWebIdentityToken", Err: &smithyhttp.ResponseError{
			Response: &smithyhttp.Response{Response: &http.Response{StatusCode: code}}, Err: err}}
	}
	api := func(code string) error { return &smithy.GenericAPIError{Code: code} }
	for _, tc := range []struct {
		err  error
		want failureKind
	}{
		{status(403, api("AccessDenied")), failRequest},
		{status(400, api("ValidationError")), failRequest},
		{status(403, api(codeFederationDisabled)), failAccount},
		{status(403, api("InvalidClientTokenId")), failCredentials},
		{status(403, api("UnrecognizedClientException")), failCredentials}, // aliases are classified as their code
		{status(400, api("RequestExpired")), failCredentials},
		{status(400, api("RegionDisabledException")), failRegion},
		{fmt.Errorf("x: %w", ErrCredentialsExpiring), failCredentials},
		{status(400, api("Throttling")), failRegion},
		{status(500, api("InternalFailure")), failRegion},
		{status(500, api("SomethingNew")), failRegion},
		{status(400, api("SomethingNew")), failRequest},
		{status(502, &smithy.DeserializationError{Err: errors.New("not XML")}), failRegion},
		{status(429, &smithy.DeserializationError{Err: errors.New("not XML")}), failRegion},
		{status(404, &smithy.DeserializationError{Err: errors.New("not XML")}), failRequest},
		{&smithy.OperationError{Err: &net.OpError{Op: "dial", Err: errors.New("connection refused")}}, failNetwork},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), failNetwork},
		{errors.New("STS returned no token"), failRequest},
	} {
		t.Run(strings.ReplaceAll(tc.err.Error(), " ", "_"), func(t *testing.T) {
			assert.Equal(t, tc.want, classify(tc.err))
		})
	}
}
