package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/otlptranslator"
	"github.com/stsauth/stsauth"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// meterName is the instrumentation scope of the proxy's own instruments.
const meterName = "github.com/stsauth/stsauth/cmd/stsproxy"

// telemetry owns the metrics pipeline: an OTel SDK MeterProvider exported
// through a private Prometheus registry, so nothing leaks into (or depends
// on) the process-global registries.
type telemetry struct {
	provider metric.MeterProvider
	shutdown func(context.Context) error
	handler  http.Handler // nil when metrics are disabled
}

// newTelemetry builds the pipeline, or a no-op provider when disabled.
//
// The exporter uses [otlptranslator.UnderscoreEscapingWithSuffixes], so
// "http.server.request.duration" in seconds is exported as
// http_server_request_duration_seconds and counters get _total, matching the
// names of the proxy stsproxy replaces. Scope labels and target_info are
// left out: dashboards of that proxy do not expect them.
func newTelemetry(enabled bool) (*telemetry, error) {
	if !enabled {
		return &telemetry{provider: noop.NewMeterProvider(), shutdown: func(context.Context) error { return nil }}, nil
	}
	reg := prometheus.NewRegistry()
	if err := reg.Register(collectors.NewGoCollector()); err != nil {
		return nil, fmt.Errorf("stsproxy: register Go collector: %w", err)
	}
	if err := reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return nil, fmt.Errorf("stsproxy: register process collector: %w", err)
	}
	exp, err := otelprom.New(
		otelprom.WithRegisterer(reg),
		otelprom.WithTranslationStrategy(otlptranslator.UnderscoreEscapingWithSuffixes),
		otelprom.WithoutScopeInfo(),
		otelprom.WithoutTargetInfo(),
	)
	if err != nil {
		return nil, fmt.Errorf("stsproxy: create Prometheus exporter: %w", err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	return &telemetry{
		provider: mp,
		shutdown: mp.Shutdown,
		handler:  promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
	}, nil
}

// proxyMetrics are the proxy's own instruments, named as in the proxy it
// replaces. Attributes are bounded: method (known methods or _OTHER), status
// code and token_result; never a host, audience or token.
type proxyMetrics struct {
	serverDuration metric.Float64Histogram
	active         metric.Int64UpDownCounter
	clientDuration metric.Float64Histogram
}

// newProxyMetrics creates the instruments on mp.
func newProxyMetrics(mp metric.MeterProvider) (*proxyMetrics, error) {
	m := mp.Meter(meterName)
	sd, err1 := m.Float64Histogram("http.server.request.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of inbound HTTP requests handled by the proxy."))
	ar, err2 := m.Int64UpDownCounter("http.server.active_requests", metric.WithUnit("{request}"),
		metric.WithDescription("Inbound HTTP requests in flight."))
	cd, err3 := m.Float64Histogram("http.client.request.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of outbound requests to upstreams, token acquisition included."))
	if err := errors.Join(err1, err2, err3); err != nil {
		return nil, fmt.Errorf("stsproxy: create instruments: %w", err)
	}
	return &proxyMetrics{serverDuration: sd, active: ar, clientDuration: cd}, nil
}

// serverStart counts a request in flight and returns the func that records
// its end.
func (m *proxyMetrics) serverStart(ctx context.Context) func(method string, status int, d time.Duration) {
	m.active.Add(ctx, 1)
	return func(method string, status int, d time.Duration) {
		m.active.Add(ctx, -1)
		m.serverDuration.Record(ctx, d.Seconds(), metric.WithAttributes(
			attribute.String("http.request.method", boundedMethod(method)),
			attribute.String("http.response.status_code", strconv.Itoa(status)),
		))
	}
}

// boundedMethod returns method if it is a standard one, else "_OTHER", so a
// client cannot grow the label set.
func boundedMethod(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return method
	}
	return "_OTHER"
}

// instrumentedTransport times each outbound round trip and labels it with
// whether the token could be had.
type instrumentedTransport struct {
	next    http.RoundTripper
	metrics *proxyMetrics
}

// RoundTrip sends req through next and records its duration.
func (t *instrumentedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	start := time.Now()
	res, err := t.next.RoundTrip(req)
	result := "ok"
	var tokErr *stsauth.TokenError
	if errors.As(err, &tokErr) {
		result = "error"
	}
	t.metrics.clientDuration.Record(req.Context(), time.Since(start).Seconds(), metric.WithAttributes(
		attribute.String("http.request.method", boundedMethod(req.Method)),
		attribute.String("token_result", result),
	))
	return res, err
}
