package stsauth

import (
	"context"
	"net/http"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// benchSource returns a source with a token for apiAudience already cached.
// With an SDK meter provider, so the hit path pays for real instruments.
func benchSource(b *testing.B) *TokenSource {
	b.Helper()
	// The fake STS mints from the real time, and the source keeps its real
	// clock: fakeClock takes a mutex, which the hot path must not pay here.
	clock := &fakeClock{t: time.Now()}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	b.Cleanup(func() { mp.Shutdown(context.Background()) })
	ts, err := NewTokenSource(&fakeSTS{clock: clock}, WithMeterProvider(mp))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ts.Close() })
	if _, err := ts.Token(context.Background(), apiAudience); err != nil {
		b.Fatal(err)
	}
	return ts
}

func BenchmarkTokenCacheHit(b *testing.B) {
	ts := benchSource(b)
	ctx := context.Background()
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := ts.Token(ctx, apiAudience); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := ts.Token(ctx, apiAudience); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// okResponse is what the benchmark's base RoundTripper answers: sending is
// out of the measurement, so what remains is the header work of each
// RoundTripper under test.
var okResponse = &http.Response{StatusCode: http.StatusOK, Body: http.NoBody}

var nopBase = roundTripperFunc(func(*http.Request) (*http.Response, error) { return okResponse, nil })

// constantHeader is the floor: the cheapest RoundTripper that honours the
// contract (never modify the caller's request) and sets a constant
// Authorization header. It clones exactly as Transport does, so the
// difference between them is the token lookup and the host checks.
type constantHeader struct {
	base  http.RoundTripper
	value string
}

func (c constantHeader) RoundTrip(req *http.Request) (*http.Response, error) {
	out := new(http.Request)
	*out = *req
	out.Header = cloneHeaderWith(req.Header, "Authorization", c.value)
	return c.base.RoundTrip(out)
}

// BenchmarkRoundTrip compares Transport with a cached token against the floor
// in one run. The sub-benchmark names are benchstat keys:
// "benchstat -col /rt" prints the ratios.
func BenchmarkRoundTrip(b *testing.B) {
	ts := benchSource(b)
	tok, _ := ts.Token(context.Background(), apiAudience)
	transports := []struct {
		name string
		rt   http.RoundTripper
	}{
		{"floor", constantHeader{base: nopBase, value: tok.bearerValue()}},
		{"static-audience", &Transport{Source: ts, Audience: FixedAudience(apiAudience), Base: nopBase}},
		{"host-audience", &Transport{Source: ts, Base: nopBase}},
		{"custom-format", &Transport{Source: ts, Audience: FixedAudience(apiAudience), Base: nopBase, Header: "X-Api-Token", Format: "Bearer tenant-a:{token}"}},
	}
	newReq := func() *http.Request {
		req, _ := http.NewRequest(http.MethodGet, "https://api.example.com/v1/things", nil)
		req.Header.Set("Accept", "application/json")
		req.Header.Set("User-Agent", "bench")
		req.Header.Set("X-Request-Id", "0123456789abcdef")
		return req
	}
	for _, tr := range transports {
		b.Run("mode=serial/rt="+tr.name, func(b *testing.B) {
			req := newReq()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := tr.rt.RoundTrip(req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	for _, tr := range transports {
		b.Run("mode=parallel/rt="+tr.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				req := newReq()
				for pb.Next() {
					if _, err := tr.rt.RoundTrip(req); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
