package stsauth

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// lifecycleMetrics are the instruments of the token lifecycle: retries
// after a rejected token, refreshes by trigger, time left on cached tokens.
// They use the "audience" label of [metrics.attrsFor].
type lifecycleMetrics struct {
	retries      metric.Int64Counter           // token.unauthorized.retry.count {audience}
	refreshes    metric.Int64Counter           // token.refresh.count {audience, trigger}
	expiry       metric.Float64ObservableGauge // token.expiry.seconds {audience}
	registration metric.Registration
}

// expiryObservation is one audience label's time left, for the gauge.
type expiryObservation struct {
	attrs *audienceAttrs
	left  time.Duration
}

// newLifecycleMetrics sets up the instruments; expiries is called at each
// collection for the time left on every cached token.
func newLifecycleMetrics(mp metric.MeterProvider, expiries func() []expiryObservation) (*lifecycleMetrics, error) {
	meter := meterOf(mp)
	m := &lifecycleMetrics{}
	var err, e error
	m.retries, e = meter.Int64Counter("token.unauthorized.retry.count",
		metric.WithDescription("Requests sent again with a fresh token after the upstream answered 401 to the cached one."),
		metric.WithUnit("{request}"))
	err = errors.Join(err, e)
	m.refreshes, e = meter.Int64Counter("token.refresh.count",
		metric.WithDescription("STS fetches, by what started them: request (a request found no usable token or one in its refresh window), scheduler (refresh of a set used since its token was minted, without a request), invalidation (the upstream rejected the token)."),
		metric.WithUnit("{call}"))
	err = errors.Join(err, e)
	m.expiry, e = meter.Float64ObservableGauge("token.expiry.seconds",
		metric.WithDescription("Seconds until the cached token expires, by audience; the soonest when several sets share the label. Absent when no token is cached."),
		metric.WithUnit("s"))
	err = errors.Join(err, e)
	if err != nil {
		return nil, err
	}
	m.registration, err = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		soonest := map[*audienceAttrs]time.Duration{}
		for _, x := range expiries() {
			if d, ok := soonest[x.attrs]; !ok || x.left < d {
				soonest[x.attrs] = x.left
			}
		}
		for a, d := range soonest {
			o.ObserveFloat64(m.expiry, max(0, d.Seconds()), a.observe...)
		}
		return nil
	}, m.expiry)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// recordRefresh counts one fetch started by trigger.
func (m *lifecycleMetrics) recordRefresh(ctx context.Context, a *audienceAttrs, trigger refreshTrigger) {
	m.refreshes.Add(ctx, 1, metric.WithAttributes(
		attribute.String("audience", a.label),
		attribute.String("trigger", string(trigger)),
	))
}

func (m *lifecycleMetrics) close() { _ = m.registration.Unregister() }

// expiries returns the time left on every cached token, for the gauge.
func (ts *TokenSource) expiries() []expiryObservation {
	now := ts.now()
	var out []expiryObservation
	for _, e := range ts.cache.snapshot() {
		if c := e.state.Load(); c != nil && c != dropped {
			out = append(out, expiryObservation{attrs: e.attrs, left: c.tok.Expiry.Sub(now)})
		}
	}
	return out
}

// Holds reports whether a token for aud is cached and still served: not
// within its hard expiry margin. A service can gate its readiness on it; it
// makes no STS call.
func (ts *TokenSource) Holds(aud Audience) bool {
	e := ts.cache.get(aud.key)
	if e == nil {
		return false
	}
	c := e.state.Load()
	return c != nil && ts.now().Before(c.expireAt)
}
