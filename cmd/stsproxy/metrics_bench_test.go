package main

import (
	"context"
	"net/http"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// BenchmarkInstrumentedTransport measures what the client-duration metric
// adds to a proxied request: choosing the attribute set and recording into
// a real SDK histogram. The next transport answers at once.
func BenchmarkInstrumentedTransport(b *testing.B) {
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	defer mp.Shutdown(context.Background())
	pm, err := newProxyMetrics(mp)
	if err != nil {
		b.Fatal(err)
	}
	res := &http.Response{StatusCode: 200, Body: http.NoBody}
	t := &instrumentedTransport{next: roundTripperFunc(func(*http.Request) (*http.Response, error) { return res, nil }), metrics: pm}
	req, err := http.NewRequest(http.MethodGet, "http://127.0.0.1:9000/x", nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := t.RoundTrip(req); err != nil {
				b.Error(err)
			}
		}
	})
}
