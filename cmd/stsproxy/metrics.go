package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
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

	serverOpts sync.Map // serverKey → metric.RecordOption
	clientOpts sync.Map // serverKey{method, 0 ok or 1 error} → metric.RecordOption
}

// durationBuckets are the OpenTelemetry HTTP semantic conventions' bucket
// boundaries for request durations, in seconds; the SDK's defaults are
// meant for milliseconds and would put every request in the first bucket.
var durationBuckets = metric.WithExplicitBucketBoundaries(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)

// newProxyMetrics creates the instruments on mp.
func newProxyMetrics(mp metric.MeterProvider) (*proxyMetrics, error) {
	m := mp.Meter(meterName)
	sd, err1 := m.Float64Histogram("http.server.request.duration", metric.WithUnit("s"), durationBuckets,
		metric.WithDescription("Duration of inbound HTTP requests handled by the proxy."))
	ar, err2 := m.Int64UpDownCounter("http.server.active_requests", metric.WithUnit("{request}"),
		metric.WithDescription("Inbound HTTP requests in flight."))
	cd, err3 := m.Float64Histogram("http.client.request.duration", metric.WithUnit("s"), durationBuckets,
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
		m.serverDuration.Record(ctx, d.Seconds(), m.serverAttrs(method, status))
	}
}

// serverKey identifies one set of server-duration attributes.
type serverKey struct {
	method string
	status int
}

// serverAttrs returns the attribute option for a method and status, built
// once per distinct pair: building an attribute set sorts and allocates, and
// would otherwise be paid by every request. The pairs are bounded, since
// methods are (see boundedMethod) and so are status codes (100 to 999).
func (m *proxyMetrics) serverAttrs(method string, status int) metric.RecordOption {
	key := serverKey{boundedMethod(method), status}
	if opt, ok := m.serverOpts.Load(key); ok {
		return opt.(metric.RecordOption)
	}
	opt := metric.WithAttributeSet(attribute.NewSet(
		attribute.String("http.request.method", key.method),
		attribute.String("http.response.status_code", strconv.Itoa(status)),
	))
	m.serverOpts.Store(key, opt)
	return opt
}

// clientAttrs returns the attribute option of an outbound request, built once
// per method and token result.
func (m *proxyMetrics) clientAttrs(method string, tokenOK bool) metric.RecordOption {
	key := serverKey{boundedMethod(method), 0}
	if !tokenOK {
		key.status = 1
	}
	if opt, ok := m.clientOpts.Load(key); ok {
		return opt.(metric.RecordOption)
	}
	result := "ok"
	if !tokenOK {
		result = "error"
	}
	opt := metric.WithAttributeSet(attribute.NewSet(
		attribute.String("http.request.method", key.method),
		attribute.String("token_result", result),
	))
	m.clientOpts.Store(key, opt)
	return opt
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
	tokenOK := err == nil || !isTokenError(err)
	t.metrics.clientDuration.Record(req.Context(), time.Since(start).Seconds(), t.metrics.clientAttrs(req.Method, tokenOK))
	return res, err
}

// isTokenError reports whether err is the library's failure to get a token.
// It is a function of its own so the target of errors.As escapes to the heap
// only on the error path.
func isTokenError(err error) bool {
	var tokErr *stsauth.TokenError
	return errors.As(err, &tokErr)
}
