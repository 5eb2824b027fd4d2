package stsauth

import (
	"context"
	"errors"
	"math/rand/v2"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/smithy-go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// instrumentationName is the OTel meter name of this package.
const instrumentationName = "github.com/stsauth/stsauth"

// MaxAudienceLabels caps how many distinct audience sets get their own value
// of the "audience" metric attribute. Host-derived audiences could otherwise
// make one time series per host; sets past the cap share the value
// [OtherAudienceLabel].
const MaxAudienceLabels = 100

// OtherAudienceLabel is the "audience" attribute value of every audience set
// past the first [MaxAudienceLabels].
const OtherAudienceLabel = "_other"

// metrics holds the instruments of one TokenSource. The names are those of
// aws-outbound-jwt-proxy, so its dashboards carry over, plus new ones.
type metrics struct {
	fetches         metric.Int64Counter           // token.fetch.count {audience, result, error_class on errors}
	fetchDuration   metric.Float64Histogram       // token.fetch.duration, seconds
	hits            metric.Int64ObservableCounter // token.cache.hit.count
	misses          metric.Int64Counter           // token.cache.miss.count
	staleServed     metric.Int64ObservableCounter // token.stale.served.count
	refreshFailures metric.Int64Counter           // token.refresh.failure.count
	evictions       metric.Int64Counter           // token.cache.eviction.count
	fallbacks       metric.Int64Counter           // token.fetch.fallback.count {region, error_class}
	cached          metric.Int64ObservableGauge
	registration    metric.Registration

	mu     sync.Mutex // guards labels
	labels map[string]*audienceAttrs
}

// audienceAttrs holds the metric options and the hot-path counters of one
// "audience" label, shared by every cache entry with that label. A cache hit
// adds to an atomic here instead of calling the SDK: one instruction instead
// of an attribute-set lookup, and nothing to allocate. The SDK reads the
// counters through a callback at collection time.
type audienceAttrs struct {
	label   string
	add     []metric.AddOption
	observe []metric.ObserveOption

	hits  stripedCounter // token.cache.hit.count
	stale stripedCounter // token.stale.served.count
}

// counterStripes is how many cells a stripedCounter spreads its adds over.
const counterStripes = 8

// stripedCounter is a counter that concurrent adders on different cores
// rarely contend on: each add goes to a random cell of its own cache line.
// One shared atomic made a parallel cache hit 4x slower than a serial one,
// the cores trading the counter's cache line back and forth.
type stripedCounter struct {
	cells [counterStripes]struct {
		n atomic.Int64
		_ [56]byte // pad the cell to a 64-byte cache line
	}
}

// Add adds one.
func (c *stripedCounter) Add() { c.cells[rand.Uint32()%counterStripes].n.Add(1) }

// Load returns the total.
func (c *stripedCounter) Load() int64 {
	var n int64
	for i := range c.cells {
		n += c.cells[i].n.Load()
	}
	return n
}

// meterOf returns this package's meter on mp, or on the global provider if
// mp is nil.
func meterOf(mp metric.MeterProvider) metric.Meter {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	return mp.Meter(instrumentationName, metric.WithInstrumentationVersion(moduleVersion()))
}

func newMetrics(mp metric.MeterProvider, cachedAudiences func() int64) (*metrics, error) {
	meter := meterOf(mp)
	m := &metrics{labels: make(map[string]*audienceAttrs)}
	var err error
	counter := func(name, desc string) metric.Int64Counter {
		c, e := meter.Int64Counter(name, metric.WithDescription(desc), metric.WithUnit("{call}"))
		err = errors.Join(err, e)
		return c
	}
	m.fetches = counter("token.fetch.count", "STS GetWebIdentityToken calls, by audience, result and error class; error class mint_rate_exceeded counts mints refused by the mint rate, which made no call.")
	m.misses = counter("token.cache.miss.count", "Token requests that found no usable cached token.")
	m.refreshFailures = counter("token.refresh.failure.count", "Background refreshes that failed while a valid token was still served.")
	m.evictions = counter("token.cache.eviction.count", "Audience sets evicted from the cache to make room.")
	m.fallbacks = counter("token.fetch.fallback.count", "STS calls that failed in a region (throttling, 5xx, network, timeout) and moved on to the next region, by the region that failed and error class. Only with fallback regions.")
	var e error
	m.fetchDuration, e = meter.Float64Histogram("token.fetch.duration",
		metric.WithDescription("Duration of STS GetWebIdentityToken calls."), metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
	err = errors.Join(err, e)
	m.cached, e = meter.Int64ObservableGauge("token.cached.audiences",
		metric.WithDescription("Audience sets in the token cache."), metric.WithUnit("{audience}"))
	err = errors.Join(err, e)
	m.hits, e = meter.Int64ObservableCounter("token.cache.hit.count",
		metric.WithDescription("Token requests served from the cache."), metric.WithUnit("{call}"))
	err = errors.Join(err, e)
	m.staleServed, e = meter.Int64ObservableCounter("token.stale.served.count",
		metric.WithDescription("Cached tokens served inside their refresh window, while a refresh is due."), metric.WithUnit("{call}"))
	err = errors.Join(err, e)
	if err != nil {
		return nil, err
	}
	m.registration, err = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(m.cached, cachedAudiences())
		m.mu.Lock()
		defer m.mu.Unlock()
		for _, a := range m.labels {
			o.ObserveInt64(m.hits, a.hits.Load(), a.observe...)
			o.ObserveInt64(m.staleServed, a.stale.Load(), a.observe...)
		}
		return nil
	}, m.cached, m.hits, m.staleServed)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// attrsFor returns the metric state of aud's label: aud's values joined
// with commas ("a,b", as aws-outbound-jwt-proxy labels it) until
// [MaxAudienceLabels] distinct sets have been labelled, then
// [OtherAudienceLabel].
func (m *metrics) attrsFor(aud Audience) *audienceAttrs {
	label := strings.ReplaceAll(aud.key, " ", ",")
	m.mu.Lock()
	defer m.mu.Unlock()
	if a, ok := m.labels[label]; ok {
		return a
	}
	if len(m.labels) >= MaxAudienceLabels {
		label = OtherAudienceLabel
		if a, ok := m.labels[label]; ok {
			return a
		}
	}
	set := attribute.NewSet(attribute.String("audience", label))
	a := &audienceAttrs{
		label:   label,
		add:     []metric.AddOption{metric.WithAttributeSet(set)},
		observe: []metric.ObserveOption{metric.WithAttributeSet(set)},
	}
	m.labels[label] = a
	return a
}

// recordFetch counts one fetch and its duration. The attributes are those
// of aws-outbound-jwt-proxy: result "ok" or "error", and error_class only on
// errors; with fallbacks ([WithFallback]) also region, the region that
// answered (or, on errors, the last one asked).
func (m *metrics) recordFetch(ctx context.Context, a *audienceAttrs, region string, d time.Duration, err error) {
	kv := make([]attribute.KeyValue, 0, 4)
	kv = append(kv, attribute.String("audience", a.label))
	if err == nil {
		kv = append(kv, attribute.String("result", "ok"))
	} else {
		kv = append(kv, attribute.String("result", "error"), attribute.String("error_class", errorClass(err)))
	}
	if region != "" {
		kv = append(kv, attribute.String("region", region))
	}
	attrs := metric.WithAttributes(kv...)
	m.fetches.Add(ctx, 1, attrs)
	m.fetchDuration.Record(ctx, d.Seconds(), attrs)
}

// recordFallback counts a call that failed in region and moved on to the
// next region.
func (m *metrics) recordFallback(ctx context.Context, region string, err error) {
	m.fallbacks.Add(ctx, 1, metric.WithAttributes(
		attribute.String("region", region),
		attribute.String("error_class", errorClass(err)),
	))
}

// errorClassMintRate is the error_class of a Token call refused by the mint
// budget ([ErrMintRateExceeded]), which made no STS call.
const errorClassMintRate = "mint_rate_exceeded"

// recordMintRefused counts, in token.fetch.count, a mint refused by the mint
// budget. It records no duration: no STS call was made.
func (m *metrics) recordMintRefused(ctx context.Context, a *audienceAttrs) {
	m.fetches.Add(ctx, 1, metric.WithAttributes(
		attribute.String("audience", a.label),
		attribute.String("result", "error"),
		attribute.String("error_class", errorClassMintRate),
	))
}

// errorClass names the kind of a fetch error with a bounded set of values,
// as aws-outbound-jwt-proxy does: the STS error code, or "transport" for
// anything that got no answer from STS (refused, reset, timed out).
func errorClass(err error) string {
	var api smithy.APIError
	if errors.As(err, &api) {
		return api.ErrorCode()
	}
	return "transport"
}

// moduleVersion returns the version of this module in the running binary
// (the otel_scope_version of its metrics): the module version of a release
// build, else "(devel)".
func moduleVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Path == modulePath && bi.Main.Version != "" {
			return bi.Main.Version
		}
		for _, d := range bi.Deps {
			if d.Path == modulePath && d.Version != "" {
				return d.Version
			}
		}
	}
	return "(devel)"
}

// modulePath is the path of this module.
const modulePath = "github.com/stsauth/stsauth"

func (m *metrics) close() {
	_ = m.registration.Unregister()
}
