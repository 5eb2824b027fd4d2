package stsauth

import (
	"errors"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
)

// lifecycleMetrics are the instruments of the token lifecycle: retries
// after a rejected token, refreshes by trigger, time left on cached tokens.
// They use the "audience" label of [metrics.attrsFor].
type lifecycleMetrics struct {
	retries metric.Int64Counter // token.unauthorized.retry.count {audience}
}

func newLifecycleMetrics(mp metric.MeterProvider) (*lifecycleMetrics, error) {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	meter := mp.Meter(instrumentationName, metric.WithInstrumentationVersion(moduleVersion()))
	m := &lifecycleMetrics{}
	var err, e error
	m.retries, e = meter.Int64Counter("token.unauthorized.retry.count",
		metric.WithDescription("Requests sent again with a fresh token after the upstream answered 401 to the cached one."),
		metric.WithUnit("{request}"))
	err = errors.Join(err, e)
	return m, err
}
