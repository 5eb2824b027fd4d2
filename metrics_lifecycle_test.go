package stsauth

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// floatGauge reads a float64 gauge as attribute set → value.
func floatGauge(t *testing.T, reader *sdkmetric.ManualReader, name string) map[string]float64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	out := map[string]float64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if g, ok := m.Data.(metricdata.Gauge[float64]); ok && m.Name == name {
				for _, p := range g.DataPoints {
					out[p.Attributes.Encoded(attributeEncoder)] = p.Value
				}
			}
		}
	}
	return out
}

func TestLifecycleMetrics(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { mp.Shutdown(context.Background()) })
	h := newSchedHarness(t, WithMeterProvider(mp), WithDuration(time.Hour), WithRefreshSkew(5*time.Minute))
	const label = "audience=https://api.example.com"

	assert.Empty(t, floatGauge(t, reader, "token.expiry.seconds"), "no token, no gauge")
	assert.False(t, h.ts.Holds(apiAudience))

	h.token(t) // request
	h.token(t)
	assert.True(t, h.ts.Holds(apiAudience))
	assert.Equal(t, map[string]float64{label: 3600}, floatGauge(t, reader, "token.expiry.seconds"))
	h.advance(t, 10*time.Minute)
	assert.Equal(t, map[string]float64{label: 3000}, floatGauge(t, reader, "token.expiry.seconds"))

	h.advance(t, 44*time.Minute+30*time.Second) // scheduler
	tok, _ := h.token(t)
	require.True(t, h.ts.Invalidate(tok))
	assert.False(t, h.ts.Holds(apiAudience))
	h.token(t) // invalidation

	// A 401 retry through Transport.
	up := &rejecting{reject: func(b string) bool { return true }}
	tr := &Transport{Source: h.ts, Audience: FixedAudience(apiAudience), Base: up}
	h.advance(t, time.Hour) // the replacement expired: a request fetches
	req, _ := http.NewRequest(http.MethodGet, "https://api.example.com/", nil)
	resp, err := tr.RoundTrip(req)
	require.NoError(t, err)
	resp.Body.Close()
	h.quiesce()

	got := collect(t, reader)
	assert.Equal(t, map[string]int64{
		label + ",trigger=request":      2,
		label + ",trigger=scheduler":    1,
		label + ",trigger=invalidation": 2,
	}, got["token.refresh.count"])
	assert.Equal(t, map[string]int64{label: 1}, got["token.unauthorized.retry.count"])

	h.advance(t, 2*time.Hour)
	assert.False(t, h.ts.Holds(apiAudience), "past its hard expiry margin a token is not held")
	assert.False(t, h.ts.Holds(MustAudience("https://unknown.example.com")))
}
