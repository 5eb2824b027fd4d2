package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
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
	"go.opentelemetry.io/otel/sdk/metric/exemplar"
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
// names of the proxy stsproxy replaces. Every series carries the
// otel_scope_name, otel_scope_version and otel_scope_schema_url labels, as
// there; target_info is left out.
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
		otelprom.WithoutTargetInfo(),
	)
	if err != nil {
		return nil, fmt.Errorf("stsproxy: create Prometheus exporter: %w", err)
	}
	// No exemplars: the exposition is the Prometheus text format, which
	// has none, yet the SDK's default filter keeps a reservoir per
	// histogram series (memory per server_address and audience) and
	// consults it on every Record.
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp), sdkmetric.WithExemplarFilter(exemplar.AlwaysOffFilter))
	return &telemetry{
		provider: mp,
		shutdown: mp.Shutdown,
		handler:  promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
	}, nil
}

// maxServerAddressLabels caps how many distinct upstream host[:port] values
// get their own server_address and server_port attributes; later ones share
// server_address="_other". Routed by a request header, clients choose the
// upstream, and must not be able to grow the series without bound.
const maxServerAddressLabels = 100

// otherServerAddress is the server_address of every upstream past the first
// maxServerAddressLabels.
const otherServerAddress = "_other"

// Values of the token_result attribute, as in the proxy stsproxy replaces.
const (
	tokenResultOK            = "ok"             // a token was attached (or none was due)
	tokenResultFetchError    = "fetch_error"    // STS gave no token
	tokenResultResolverError = "resolver_error" // no audience could be derived
)

// proxyMetrics are the proxy's own instruments, named and labelled as in
// the proxy it replaces. Attributes are bounded: method (known methods or
// _OTHER), status code, token_result, error_type and the upstream's
// server_address and server_port (capped at maxServerAddressLabels); never a
// path, audience or token.
type proxyMetrics struct {
	serverDuration metric.Float64Histogram
	active         metric.Int64UpDownCounter
	clientDuration metric.Float64Histogram

	serverOpts sync.Map // serverKey → []metric.RecordOption
	clientOpts sync.Map // clientKey → []metric.RecordOption

	addrMu sync.Mutex          // guards addrs
	addrs  map[string]struct{} // upstream host[:port] values with their own label
}

// durationBuckets are the OpenTelemetry HTTP semantic conventions' bucket
// boundaries for request durations, in seconds; the SDK's defaults are
// meant for milliseconds and would put every request in the first bucket.
var durationBuckets = metric.WithExplicitBucketBoundaries(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)

// newProxyMetrics creates the instruments on mp.
func newProxyMetrics(mp metric.MeterProvider) (*proxyMetrics, error) {
	m := mp.Meter(meterName, metric.WithInstrumentationVersion(versionString()))
	sd, err1 := m.Float64Histogram("http.server.request.duration", metric.WithUnit("s"), durationBuckets,
		metric.WithDescription("Duration of inbound HTTP requests handled by the proxy."))
	ar, err2 := m.Int64UpDownCounter("http.server.active_requests", metric.WithUnit("{request}"),
		metric.WithDescription("Inbound HTTP requests in flight."))
	cd, err3 := m.Float64Histogram("http.client.request.duration", metric.WithUnit("s"), durationBuckets,
		metric.WithDescription("Duration of outbound requests to upstreams, token acquisition included."))
	if err := errors.Join(err1, err2, err3); err != nil {
		return nil, fmt.Errorf("stsproxy: create instruments: %w", err)
	}
	return &proxyMetrics{serverDuration: sd, active: ar, clientDuration: cd, addrs: make(map[string]struct{})}, nil
}

// serverStart counts a request in flight; serverEnd, called with the same
// ctx, records its end. (Two methods, not a returned closure: a closure
// over ctx is an allocation per request.)
func (m *proxyMetrics) serverStart(ctx context.Context) {
	m.active.Add(ctx, 1)
}

// serverEnd ends what serverStart began: the request is no longer in
// flight, and took d with this method and status.
func (m *proxyMetrics) serverEnd(ctx context.Context, method string, status int, d time.Duration) {
	m.active.Add(ctx, -1)
	m.serverDuration.Record(ctx, d.Seconds(), m.serverAttrs(method, status)...)
}

// serverKey identifies one set of server-duration attributes.
type serverKey struct {
	method string // bounded
	status string // bounded
}

// serverAttrs returns the record options for a method and status, built
// once per distinct pair: building an attribute set sorts and allocates, and
// would otherwise be paid by every request (as would the variadic slice, had
// it returned one option). The pairs are bounded, since methods are (see
// boundedMethod) and so are status labels (boundedStatus).
func (m *proxyMetrics) serverAttrs(method string, status int) []metric.RecordOption {
	key := serverKey{boundedMethod(method), boundedStatus(status)}
	if opts, ok := m.serverOpts.Load(key); ok {
		return opts.([]metric.RecordOption)
	}
	opts := []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(
		attribute.String("http.request.method", key.method),
		attribute.String("http.response.status_code", key.status),
	))}
	m.serverOpts.Store(key, opts)
	return opts
}

// clientKey identifies one set of client-duration attributes. It holds two
// strings, not five: every request hashes it, and the scheme matters only
// through its default port, token_result and error_type only through the
// outcome.
type clientKey struct {
	host    string  // the request URL's host[:port]
	method  string  // bounded
	port    uint16  // the scheme's default port (defaultPort), or 0
	outcome outcome // token_result and error_type
}

// outcome is how an outbound request ended: its token_result and, on a
// network failure, its error_type.
type outcome uint8

const (
	outcomeOK            outcome = iota // a response came back
	outcomeFetchError                   // STS gave no token
	outcomeResolverError                // no audience could be derived
	outcomeTimeout                      // network failure: timeout
	outcomeRefused                      // network failure: connection refused
	outcomeUnknown                      // any other network failure
)

// outcomeAttrs are the token_result and error_type values of each outcome,
// as in the proxy stsproxy replaces; error_type is "" when there is none.
var outcomeAttrs = [...]struct{ tokenResult, errorType string }{
	outcomeOK:            {tokenResultOK, ""},
	outcomeFetchError:    {tokenResultFetchError, ""},
	outcomeResolverError: {tokenResultResolverError, ""},
	outcomeTimeout:       {tokenResultOK, "timeout"},
	outcomeRefused:       {tokenResultOK, "connection_refused"},
	outcomeUnknown:       {tokenResultOK, "unknown"},
}

// clientAttrs returns the record options of an outbound request, built once
// per distinct key: method, server_address, server_port (only when not the
// scheme's default), error_type (only on failure) and token_result. Keys are
// bounded since every part is: host by the cap on labelled addresses, the
// rest by construction. It returns a slice, not one option, so that passing
// it to Record allocates no variadic slice per request.
func (m *proxyMetrics) clientAttrs(method, scheme, host string, o outcome) []metric.RecordOption {
	key := clientKey{host, boundedMethod(method), defaultPort(scheme), o}
	if opts, ok := m.clientOpts.Load(key); ok {
		return opts.([]metric.RecordOption) // host has a label of its own
	}
	if key.host = m.boundedHost(host); key.host == otherServerAddress {
		if opts, ok := m.clientOpts.Load(key); ok {
			return opts.([]metric.RecordOption)
		}
	}
	attrs := []attribute.KeyValue{
		attribute.String("http.request.method", key.method),
		attribute.String("token_result", outcomeAttrs[o].tokenResult),
	}
	if key.host == otherServerAddress {
		attrs = append(attrs, attribute.String("server.address", otherServerAddress))
	} else if h, p, err := stsauth.SplitHostPort(key.host); err == nil {
		attrs = append(attrs, attribute.String("server.address", h))
		if port, err := strconv.Atoi(p); err == nil && port != int(key.port) {
			attrs = append(attrs, attribute.Int("server.port", port))
		}
	}
	if et := outcomeAttrs[o].errorType; et != "" {
		attrs = append(attrs, attribute.String("error.type", et))
	}
	opts := []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(attrs...))}
	m.clientOpts.Store(key, opts)
	return opts
}

// boundedHost returns host if it has, or may still get, its own label, else
// otherServerAddress.
func (m *proxyMetrics) boundedHost(host string) string {
	m.addrMu.Lock()
	defer m.addrMu.Unlock()
	if _, ok := m.addrs[host]; ok {
		return host
	}
	if len(m.addrs) >= maxServerAddressLabels {
		return otherServerAddress
	}
	m.addrs[host] = struct{}{}
	return host
}

// defaultPort returns the port a scheme implies, or 0.
func defaultPort(scheme string) uint16 {
	switch scheme {
	case "http":
		return 80
	case "https":
		return 443
	}
	return 0
}

// statusLabels holds the label of every status code net/http knows, so
// boundedStatus allocates nothing.
var statusLabels = func() map[int]string {
	m := make(map[int]string)
	for code := 100; code <= 599; code++ {
		if http.StatusText(code) != "" {
			m[code] = strconv.Itoa(code)
		}
	}
	return m
}()

// boundedStatus returns the status_code label of an upstream status: the
// code itself if net/http knows it, else its class ("1xx" to "5xx"), else
// "_OTHER", so an upstream cannot grow the label set.
func boundedStatus(code int) string {
	if l, ok := statusLabels[code]; ok {
		return l
	}
	if code >= 100 && code <= 599 {
		return [...]string{"1xx", "2xx", "3xx", "4xx", "5xx"}[code/100-1]
	}
	return "_OTHER"
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
// its upstream, whether the token could be had and, on a network failure,
// the kind of failure.
type instrumentedTransport struct {
	next    http.RoundTripper
	metrics *proxyMetrics
}

// RoundTrip sends req through next and records its duration. A request the
// library refused to send to its host is not an outbound request and is not
// recorded.
func (t *instrumentedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	start := time.Now()
	res, err := t.next.RoundTrip(req)
	o := outcomeOK
	switch {
	case err == nil:
	case isTokenError(err):
		o = outcomeFetchError
	case isResolverError(err):
		o = outcomeResolverError
	case errors.Is(err, stsauth.ErrHostNotAllowed):
		return res, err
	default:
		o = classifyNetError(err)
	}
	t.metrics.clientDuration.Record(req.Context(), time.Since(start).Seconds(),
		t.metrics.clientAttrs(req.Method, req.URL.Scheme, req.URL.Host, o)...)
	return res, err
}

// classifyNetError returns the outcome of a failed upstream request, in
// the error_type vocabulary of the proxy stsproxy replaces: timeout,
// connection_refused or unknown.
func classifyNetError(err error) outcome {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return outcomeTimeout
	case errors.Is(err, syscall.ECONNREFUSED):
		return outcomeRefused
	}
	return outcomeUnknown
}

// isTokenError reports whether err is the library's failure to get a token.
// It is a function of its own so the target of errors.As escapes to the heap
// only on the error path.
func isTokenError(err error) bool {
	var tokErr *stsauth.TokenError
	return errors.As(err, &tokErr)
}

// resolverError marks an error of the audience resolver, so metrics can
// tell it from a token or network failure.
type resolverError struct{ err error }

// Error returns the resolver's message.
func (e *resolverError) Error() string { return e.err.Error() }

// Unwrap returns the resolver's error.
func (e *resolverError) Unwrap() error { return e.err }

// isResolverError reports whether err came from the audience resolver.
func isResolverError(err error) bool {
	var re *resolverError
	return errors.As(err, &re)
}

// markedResolver wraps an audience resolver and marks its errors as
// *resolverError.
type markedResolver struct{ next stsauth.AudienceResolver }

// ResolveAudience resolves with next, marking an error.
func (r markedResolver) ResolveAudience(req *http.Request) (stsauth.Audience, error) {
	aud, err := r.next.ResolveAudience(req)
	if err != nil {
		return aud, &resolverError{err: err}
	}
	return aud, nil
}
