package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"

	"github.com/stsauth/stsauth/ststest"
	"github.com/stsauth/stsauth/verify"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// BenchmarkInboundHandler measures stsproxy inbound's handler against the
// floor, a bare httputil.ReverseProxy, on one reused token, in process: the
// upstream transport answers at once, so only the per-request work differs
// (verification from the verified-token cache, header scrubbing, identity
// headers, metrics and the access log at its default level).
func BenchmarkInboundHandler(b *testing.B) {
	sts := ststest.NewServer()
	defer sts.Close()
	up := roundTripperFunc(func(r *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 200, Header: http.Header{"Content-Length": {"2"}}, Body: io.NopCloser(strings.NewReader("ok")), ContentLength: 2, Request: r}, nil
	})
	target, _ := url.Parse("http://127.0.0.1:8080")
	floor := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(target) }, Transport: up}

	cfg, err := parseCommandConfig(inboundCommand, []string{"--upstream", target.String(), "--issuer", sts.Issuer(),
		"--audience", inboundAud, "--allow-insecure-issuer"}, func(string) string { return "" })
	if err != nil {
		b.Fatal(err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	defer mp.Shutdown(context.Background())
	pm, _ := newProxyMetrics(mp)
	im, _ := newInboundMetrics(mp)
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	vc := cfg.inbound.verify
	vc.MeterProvider, vc.Logger = mp, log
	v, err := verify.New(vc)
	if err != nil {
		b.Fatal(err)
	}
	if err := v.Prime(context.Background()); err != nil {
		b.Fatal(err)
	}
	in := newInbound(cfg, v, &instrumentedTransport{next: up, metrics: pm}, log, pm, im)
	tok := mintToken(b, sts, "ES384", nil, inboundAud)

	for _, tc := range []struct {
		name string
		h    http.Handler
	}{{"rt=floor", floor}, {"rt=inbound", in}} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					r := httptest.NewRequest(http.MethodGet, "http://127.0.0.1:8443/bench", nil)
					r.Header.Set("Authorization", "Bearer "+tok)
					w := httptest.NewRecorder()
					tc.h.ServeHTTP(w, r)
					if w.Code != http.StatusOK {
						b.Errorf("status %d: %s", w.Code, w.Body.String())
						return
					}
				}
			})
		})
	}
}
