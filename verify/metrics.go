package verify

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// instrumentationName is the OTel meter name of this package.
const instrumentationName = "github.com/stsauth/stsauth/verify"

// metrics holds the instruments of one Verifier.
//
//   - verify.verification.count {result}: Verify calls, result "success" or
//     the error kind ("expired", "audience", "bad_signature", ...).
//   - verify.jwks.fetch.count {issuer, result}: key fetches, result
//     "success" or "error".
//   - verify.replay.eviction.count: tokens the replay guard forgot before
//     they expired because it was full (see [Config.ReplayCacheSize]); a
//     token forgotten so could be replayed unnoticed.
//
// Attribute values are bounded: results are a fixed set and issuers are
// the configured ones.
type metrics struct {
	verifications metric.Int64Counter
	fetches       metric.Int64Counter
	evictions     metric.Int64Counter // of the replay guard
	// byResult holds the attributes of each result, as the one-element
	// slices Add takes: passing a precomputed slice spares each call the
	// allocation of its variadic argument. Read-only after New.
	byResult map[string][]metric.AddOption
	success  []metric.AddOption // byResult["success"]
}

// newMetrics creates the instruments on mp (the global provider if nil) and
// the fetch attributes of each issuer.
func newMetrics(mp metric.MeterProvider, issuers []*issuer) (*metrics, error) {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	meter := mp.Meter(instrumentationName)
	m := &metrics{byResult: make(map[string][]metric.AddOption, len(kinds)+2)}
	var err, e error
	m.verifications, e = meter.Int64Counter("verify.verification.count",
		metric.WithDescription("Token verifications, by result."), metric.WithUnit("{token}"))
	err = errors.Join(err, e)
	m.fetches, e = meter.Int64Counter("verify.jwks.fetch.count",
		metric.WithDescription("Fetches of an issuer's discovery document and JWKS, by issuer and result."), metric.WithUnit("{fetch}"))
	err = errors.Join(err, e)
	m.evictions, e = meter.Int64Counter("verify.replay.eviction.count",
		metric.WithDescription("Tokens the replay guard forgot before they expired because it was full: each could be replayed unnoticed. Raise the replay cache size."), metric.WithUnit("{token}"))
	err = errors.Join(err, e)
	if err != nil {
		return nil, err
	}
	results := []string{"success", infoOf(nil).result}
	for _, k := range kinds {
		results = append(results, k.result)
	}
	for _, r := range results {
		m.byResult[r] = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(attribute.String("result", r)))}
	}
	m.success = m.byResult["success"]
	for _, is := range issuers {
		is.fetchOK = metric.WithAttributeSet(attribute.NewSet(attribute.String("issuer", is.url), attribute.String("result", "success")))
		is.fetchErr = metric.WithAttributeSet(attribute.NewSet(attribute.String("issuer", is.url), attribute.String("result", "error")))
	}
	return m, nil
}

// recordVerify counts one Verify call that returned err.
func (m *metrics) recordVerify(ctx context.Context, err error) {
	if err == nil {
		m.verifications.Add(ctx, 1, m.success...)
		return
	}
	m.verifications.Add(ctx, 1, m.byResult[infoOf(err).result]...)
}

// recordFetch counts one key fetch of is that returned err.
func (m *metrics) recordFetch(ctx context.Context, is *issuer, err error) {
	if err != nil {
		m.fetches.Add(ctx, 1, is.fetchErr)
		return
	}
	m.fetches.Add(ctx, 1, is.fetchOK)
}
