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

	"github.com/stsauth/stsauth"
	"github.com/stsauth/stsauth/ststest"
)

// BenchmarkProxyHandler measures the outbound proxy's handler against the
// floor of issue 19, a bare httputil.ReverseProxy setting a constant
// 900-byte bearer header, in process: the upstream transport answers at
// once, so only the per-request work differs (routing, the Via and
// X-Forwarded-For headers, the library's cached token, both request
// metrics on an OTel SDK provider and the access log at its default
// level), with the proxy's own metrics pipeline.
func BenchmarkProxyHandler(b *testing.B) {
	sts := ststest.NewServer()
	defer sts.Close()
	up := roundTripperFunc(func(r *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 200, Header: http.Header{"Content-Length": {"2"}}, Body: io.NopCloser(strings.NewReader("ok")), ContentLength: 2, Request: r}, nil
	})
	target, _ := url.Parse("http://127.0.0.1:8080")
	bearer := "Bearer " + strings.Repeat("x", 893)
	floor := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		pr.SetURL(target)
		pr.Out.Header.Set("Authorization", bearer)
	}, Transport: up, BufferPool: copyBuffers{}}

	cfg, err := parseConfig([]string{"--upstream-host", target.Host, "--upstream-scheme", "http",
		"--token-audience", "https://api.example.com"}, func(string) string { return "" })
	if err != nil {
		b.Fatal(err)
	}
	tel, err := newTelemetry(true) // the proxy's own pipeline
	if err != nil {
		b.Fatal(err)
	}
	defer tel.shutdown(context.Background())
	mp := tel.provider
	pm, err := newProxyMetrics(mp)
	if err != nil {
		b.Fatal(err)
	}
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	ts, err := newTokenSource(cfg, sts.Client(), mp, log)
	if err != nil {
		b.Fatal(err)
	}
	defer ts.Close()
	tr := &stsauth.Transport{Source: ts, Base: up, Audience: stsauth.FixedAudience(cfg.audience)}
	px := newProxy(cfg, &instrumentedTransport{next: tr, metrics: pm}, log, pm)
	if _, err := ts.Token(context.Background(), cfg.audience); err != nil {
		b.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		h    http.Handler
	}{{"floor", floor}, {"stsproxy", px}} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					r := httptest.NewRequest(http.MethodGet, "http://127.0.0.1:8443/bench", nil)
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
