package verify

import (
	"context"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// BenchmarkVerify verifies one token over and over with warm keys and an
// OTel SDK meter provider: with the token cache (every call after the first
// is a hit), with the cache but its entry dropped after each call (every
// call a first check that fills the cache), and without the cache.
//
//	go test -run '^$' -bench BenchmarkVerify -benchmem ./verify
func BenchmarkVerify(b *testing.B) {
	clock := newClock()
	s := startSTS(b, clock, nil)
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	b.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	for _, alg := range []string{"RS256", "ES384"} {
		tok := mint(b, s, alg, aud)
		for _, cache := range []struct {
			name string
			size int
		}{{"hit", 0}, {"miss", 0}, {"off", -1}} {
			b.Run("alg="+alg+"/cache="+cache.name, func(b *testing.B) {
				v := newTestVerifier(b, clock, Config{Issuers: []Issuer{{URL: s.URL}}, Audiences: []string{aud}, TokenCacheSize: cache.size, MeterProvider: mp})
				ctx := context.Background()
				if _, err := v.Verify(ctx, tok); err != nil {
					b.Fatal(err)
				}
				h := hashToken(tok)
				b.ReportAllocs()
				for b.Loop() {
					if _, err := v.Verify(ctx, tok); err != nil {
						b.Fatal(err)
					}
					if cache.name == "miss" {
						v.cache.remove(&h, v.cache.get(&h))
					}
				}
			})
		}
	}
}

// BenchmarkVerifyParallel is the cached ES384 case from every core: it shows
// whether hits serialize on a lock.
func BenchmarkVerifyParallel(b *testing.B) {
	clock := newClock()
	s := startSTS(b, clock, nil)
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	b.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	tok := mint(b, s, "ES384", aud)
	v := newTestVerifier(b, clock, Config{Issuers: []Issuer{{URL: s.URL}}, Audiences: []string{aud}, MeterProvider: mp})
	if _, err := v.Verify(context.Background(), tok); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			if _, err := v.Verify(ctx, tok); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
