package verify

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// counts reads every Int64 sum as name -> attribute set -> value.
func counts(t *testing.T, reader *sdkmetric.ManualReader) map[string]map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	out := map[string]map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		assert.Equal(t, instrumentationName, sm.Scope.Name)
		for _, m := range sm.Metrics {
			sum, ok := m.Data.(metricdata.Sum[int64])
			require.True(t, ok, m.Name)
			out[m.Name] = map[string]int64{}
			for _, dp := range sum.DataPoints {
				out[m.Name][dp.Attributes.Encoded(attribute.DefaultEncoder())] = dp.Value
			}
		}
	}
	return out
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	clock := newClock()
	s := startSTS(t, clock, nil)
	down := newTestIssuer(t)
	down.set(func(ti *testIssuer) { ti.status = http.StatusServiceUnavailable })
	v := newTestVerifier(t, clock, Config{Issuers: []Issuer{{URL: s.URL}, {URL: down.URL}}, Audiences: []string{aud}, MeterProvider: mp})
	require.Error(t, v.Prime(t.Context()))
	tok := mint(t, s, "RS256", aud)
	_, err := v.Verify(t.Context(), tok)
	require.NoError(t, err)
	_, err = v.Verify(t.Context(), mint(t, s, "RS256", "nope"))
	require.ErrorIs(t, err, ErrAudience)
	_, err = v.Verify(t.Context(), "x.y.z")
	require.ErrorIs(t, err, ErrMalformed)

	got := counts(t, reader)
	assert.Equal(t, map[string]int64{
		"result=success":   1,
		"result=audience":  1,
		"result=malformed": 1,
	}, got["verify.verification.count"])
	assert.Equal(t, map[string]int64{
		"issuer=" + s.URL + ",result=success":  1,
		"issuer=" + down.URL + ",result=error": 1,
	}, got["verify.jwks.fetch.count"])
}

// TestReplayEvictionMetric: a replay guard too small for the tokens it sees
// forgets unexpired ones, and each is counted, so an operator can tell it
// protects little.
func TestReplayEvictionMetric(t *testing.T) {
	t.Parallel()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	clock := newClock()
	s := startSTS(t, clock, nil)
	v := newTestVerifier(t, clock, Config{Issuers: []Issuer{{URL: s.URL}}, Audiences: []string{aud}, ReplayCacheSize: 2, MeterProvider: mp})
	var toks []string
	for range 5 {
		tok := mint(t, s, "ES384", aud)
		toks = append(toks, tok)
		_, err := v.Verify(t.Context(), tok)
		require.NoError(t, err)
	}
	assert.Equal(t, map[string]int64{"": 3}, counts(t, reader)["verify.replay.eviction.count"], "5 live tokens through a guard of 2")
	_, err := v.Verify(t.Context(), toks[0])
	assert.NoError(t, err, "a forgotten token can be replayed: what the metric warns of")
	assert.Equal(t, map[string]int64{"": 4}, counts(t, reader)["verify.replay.eviction.count"], "remembering it again evicted another")

	clock.Advance(time.Hour) // every token expired
	_, err = v.Verify(t.Context(), mint(t, s, "ES384", aud))
	require.NoError(t, err)
	assert.Equal(t, map[string]int64{"": 4}, counts(t, reader)["verify.replay.eviction.count"], "expired entries make room without an eviction")
}
