package stsauth

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/aws/smithy-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// collect reads every int64 sum and gauge from reader as name → attribute
// set description → value.
func collect(t *testing.T, reader *sdkmetric.ManualReader) map[string]map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	out := map[string]map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			series := map[string]int64{}
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					series[p.Attributes.Encoded(attributeEncoder)] += p.Value
				}
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					series[p.Attributes.Encoded(attributeEncoder)] = p.Value
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					series[p.Attributes.Encoded(attributeEncoder)] += int64(p.Count)
				}
			}
			out[m.Name] = series
		}
	}
	return out
}

func total(series map[string]int64) int64 {
	var n int64
	for _, v := range series {
		n += v
	}
	return n
}

func TestMetrics(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	ts, fake, clock := newTestSource(t, WithMeterProvider(mp), WithCacheSize(2), WithDuration(time.Hour), WithRefreshSkew(5*time.Minute))
	ctx := context.Background()

	a, b, c := MustAudience("https://a.example"), MustAudience("https://b.example", "https://a.example"), MustAudience("https://c.example")
	for _, aud := range []Audience{a, a, a, b} { // 2 misses, 2 hits
		_, err := ts.Token(ctx, aud)
		require.NoError(t, err)
	}
	fake.set(func(f *fakeSTS) { f.fail = &smithy.GenericAPIError{Code: "AccessDenied"} })
	_, err := ts.Token(ctx, c) // a miss, a failed fetch, and an eviction
	require.Error(t, err)
	fake.set(func(f *fakeSTS) { f.fail = &smithy.GenericAPIError{Code: "Throttling"} })
	clock.Advance(56 * time.Minute) // a is inside its refresh window
	_, err = ts.Token(ctx, a)
	require.NoError(t, err)
	settle(ts)

	got := collect(t, reader)
	assert.EqualValues(t, 3, total(got["token.cache.hit.count"]))
	assert.EqualValues(t, 3, total(got["token.cache.miss.count"]))
	assert.EqualValues(t, 1, total(got["token.stale.served.count"]))
	assert.EqualValues(t, 1, total(got["token.refresh.failure.count"]))
	assert.EqualValues(t, 1, total(got["token.cache.eviction.count"]))
	assert.EqualValues(t, 2, total(got["token.cached.audiences"]))
	assert.EqualValues(t, 4, total(got["token.fetch.duration"]))
	assert.Equal(t, map[string]int64{
		"audience=https://a.example,result=ok":                             1,
		`audience=https://a.example\,https://b.example,result=ok`:          1, // the encoder escapes the comma
		"audience=https://c.example,error_class=AccessDenied,result=error": 1,
		"audience=https://a.example,error_class=Throttling,result=error":   1,
	}, got["token.fetch.count"])
}

func TestErrorClass(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&smithy.GenericAPIError{Code: "AccessDenied"}, "AccessDenied"},
		{fmt.Errorf("wrapped: %w", &smithy.GenericAPIError{Code: "ExpiredTokenException"}), "ExpiredTokenException"},
		{&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, "transport"},
		{context.DeadlineExceeded, "transport"},
		{errors.New("reset"), "transport"},
	} {
		assert.Equal(t, tc.want, errorClass(tc.err), "errorClass(%v)", tc.err)
	}
}

func TestMetricsCapAudienceLabels(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	ts, _, _ := newTestSource(t, WithMeterProvider(mp))
	for i := range MaxAudienceLabels + 50 {
		_, err := ts.Token(context.Background(), MustAudience(fmt.Sprintf("https://h%d.example", i)))
		require.NoError(t, err)
	}
	misses := collect(t, reader)["token.cache.miss.count"]
	assert.Len(t, misses, MaxAudienceLabels+1, "100 audiences and _other")
	assert.EqualValues(t, 50, misses["audience="+OtherAudienceLabel])
}

var attributeEncoder = attribute.DefaultEncoder()
