package stsauth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sts"
)

// A second region when STS fails in the first. GetWebIdentityToken is
// served only by regional endpoints, while the issuer and its keys are per
// account and global: a token minted in another region verifies the same.
// With fallbacks, a fetch asks the regions in order and takes the first
// answer; a failure that another region may not have (throttling, a 5xx,
// the region disabled, the network, a timeout) moves on to the next, while
// an answer about the request (access denied, validation, an audience, the
// credentials, the feature disabled) ends the fetch, as every region would
// say the same.
//
// A region that failed backs off as an audience set does (1 s doubling to
// 30 s, full jitter) and is skipped meanwhile; once its backoff has run
// out, one fetch at a time tries it first again, a probe, and its first
// answer ends the backoff. So a fetch always starts with the primary unless
// the primary failed within its backoff window, and traffic returns to it
// as soon as it answers. The fetch timeout bounds the fetch across regions:
// each region asked gets an equal share of what is left of it, the last all
// of it.

// WithFallback sets the STS clients, typically *sts.Client values for other
// regions built from the same aws.Config, that a fetch tries in order when
// the client passed to [NewTokenSource] (the primary) fails in a way
// another region may not: throttling, an HTTP 5xx, RegionDisabledException,
// a network error or a timeout. An error about the request (AccessDenied,
// ValidationError, SessionDurationEscalationException, the feature
// disabled, invalid credentials) is never tried elsewhere. A region that
// failed is skipped until its backoff (1 s doubling to 30 s) runs out; then
// one fetch tries it first again, and it is used as before once it answers.
// Each region a fetch asks gets an equal share of what is left of the fetch
// timeout ([WithFetchTimeout]), the last all of it, so the whole fetch stays
// within it. A fetch that a fallback answered is a success: it backs off
// nothing.
//
// Metrics and logs name the region that answered: with fallbacks,
// token.fetch.count and token.fetch.duration carry a "region" attribute,
// and token.fetch.fallback.count counts the calls that failed in a region
// and moved on to the next. A client's region is its Options().Region for
// an *sts.Client, else "primary" or "fallback<n>" by position; a name that
// repeats an earlier one gets "#<position>" appended. A nil client is an
// invalid option; no clients, the default, means no fallback.
func WithFallback(clients ...GetWebIdentityTokenAPIClient) Option {
	return func(c *config) { c.fallbacks = append([]GetWebIdentityTokenAPIClient(nil), clients...) }
}

// region is one STS client of a source with fallbacks, and its health.
type region struct {
	client GetWebIdentityTokenAPIClient
	name   string // its metric attribute and log value

	// retryAt is when its backoff ends, in Unix nanoseconds; 0 while it
	// answers.
	retryAt atomic.Int64
	probing atomic.Bool // a fetch tries it after its backoff ran out

	mu       sync.Mutex // guards failures
	failures int
}

// label is the "region" metric attribute of a fetch r answered: its name,
// or "" (no attribute) for a source without fallbacks (r is nil).
func (r *region) label() string {
	if r == nil {
		return ""
	}
	return r.name
}

// newRegions returns the regions of primary and fallbacks, in order, with
// unique names.
func newRegions(primary GetWebIdentityTokenAPIClient, fallbacks []GetWebIdentityTokenAPIClient) []*region {
	clients := append([]GetWebIdentityTokenAPIClient{primary}, fallbacks...)
	regions := make([]*region, len(clients))
	seen := map[string]bool{}
	for i, c := range clients {
		name := regionName(c, i)
		if seen[name] {
			name += "#" + strconv.Itoa(i)
		}
		seen[name] = true
		regions[i] = &region{client: c, name: name}
	}
	return regions
}

// regionName is the region of client, the ith of a source: its configured
// Region, or its position.
func regionName(client GetWebIdentityTokenAPIClient, i int) string {
	if c, ok := client.(interface{ Options() sts.Options }); ok {
		if r := c.Options().Region; r != "" {
			return r
		}
	}
	if i == 0 {
		return "primary"
	}
	return "fallback" + strconv.Itoa(i)
}

// errShareSpent is the cancellation cause of a call that used up its
// region's share of the fetch timeout.
var errShareSpent = errors.New("stsauth: region's share of the fetch timeout spent")

// askRegions asks the regions admitted now, in order, until one answers
// with a token or with an error about the request; deadline is when the
// fetch times out. It returns the region whose answer it returns.
func (ts *TokenSource) askRegions(ctx context.Context, e *entry, requested time.Duration, why Shortening, deadline time.Time) (*sts.GetWebIdentityTokenOutput, time.Duration, Shortening, *region, error) {
	plan := ts.plan(ts.now())
	defer plan.release()
	var earlier []string // "region: error" of each region that failed
	for i, r := range plan.regions {
		actx, spent := ctx, func() bool { return false }
		var share time.Duration
		if left := len(plan.regions) - i; left > 1 {
			share = deadline.Sub(ts.now()) / time.Duration(left)
			actx, spent = ts.withShare(ctx, share)
		}
		out, got, gotWhy, err := ts.ask(actx, r.client, e, requested, why)
		if spent() && err != nil {
			err = fmt.Errorf("no answer within %v, its share of the fetch timeout: %w", share, context.DeadlineExceeded)
		}
		plan.done(r)
		if err == nil {
			ts.regionAnswered(r)
			if r != ts.regions[0] {
				ts.cfg.logger.Info("stsauth: web identity token fetched from a fallback region",
					slog.String("audience", e.aud.String()), slog.String("region", r.name))
			}
			return out, got, gotWhy, r, nil
		}
		if !regional(err) {
			// An answer about the request: every region would say the same.
			ts.regionAnswered(r)
			return nil, got, gotWhy, r, regionError(r, err, earlier)
		}
		if ts.stop.Err() == nil {
			ts.regionFailed(r, ts.now())
		}
		if ctx.Err() != nil || i == len(plan.regions)-1 {
			// The fetch timed out or the source closed, or no region is
			// left to ask.
			return nil, got, gotWhy, r, regionError(r, err, earlier)
		}
		next := plan.regions[i+1]
		ts.metrics.recordFallback(ctx, r.name, err)
		ts.cfg.logger.Warn("stsauth: STS failed in a region; trying the next",
			slog.String("audience", e.aud.String()), slog.String("region", r.name),
			slog.String("next_region", next.name), slog.Any("error", err))
		earlier = append(earlier, r.name+": "+err.Error())
	}
	panic("stsauth: a fetch planned no region") // plan returns at least one
}

// regionError names the region of err, and the errors of the regions asked
// before it.
func regionError(r *region, err error, earlier []string) error {
	if len(earlier) == 0 {
		return fmt.Errorf("in %s: %w", r.name, err)
	}
	return fmt.Errorf("in %s: %w (after %s)", r.name, err, strings.Join(earlier, "; "))
}

// regionPlan is the regions a fetch asks, in order, and the probes it holds.
type regionPlan struct {
	regions []*region
	probes  []*region // regions whose probing flag this fetch set
}

// plan returns the regions a fetch starting at now asks, in order: every
// region that is not backing off, and each whose backoff has run out if no
// other fetch probes it. If that leaves none, every region backs off (the
// source-wide backoff let this fetch through): it asks them all.
func (ts *TokenSource) plan(now time.Time) *regionPlan {
	p := &regionPlan{}
	for _, r := range ts.regions {
		switch at := r.retryAt.Load(); {
		case at == 0:
			p.regions = append(p.regions, r)
		case now.UnixNano() >= at && r.probing.CompareAndSwap(false, true):
			p.regions = append(p.regions, r)
			p.probes = append(p.probes, r)
		}
	}
	if len(p.regions) == 0 {
		p.regions = ts.regions
	}
	return p
}

// done ends the probe of r, if this fetch holds it.
func (p *regionPlan) done(r *region) {
	for i, x := range p.probes {
		if x == r {
			r.probing.Store(false)
			p.probes = append(p.probes[:i], p.probes[i+1:]...)
			return
		}
	}
}

// release ends the probes of the regions this fetch did not ask.
func (p *regionPlan) release() {
	for _, r := range p.probes {
		r.probing.Store(false)
	}
	p.probes = nil
}

// withShare returns a context that ends d from now by the source's clock,
// or with parent, and a function, to call once the call it served returned,
// that reports whether d ran out.
func (ts *TokenSource) withShare(parent context.Context, d time.Duration) (context.Context, func() bool) {
	ctx, cancel := context.WithCancelCause(parent)
	fire, stopTimer := ts.timerAt(ts.now().Add(d))
	done, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		select {
		case <-fire:
			cancel(errShareSpent)
		case <-done:
		}
	}()
	return ctx, func() bool {
		stopTimer()
		close(done)
		<-exited
		spent := context.Cause(ctx) == errShareSpent
		cancel(nil)
		return spent
	}
}

// regionAnswered ends the backoff of r, which answered.
func (ts *TokenSource) regionAnswered(r *region) {
	if r.retryAt.Load() == 0 {
		return
	}
	r.mu.Lock()
	failures := r.failures
	r.failures = 0
	r.retryAt.Store(0)
	r.mu.Unlock()
	if failures > 0 {
		ts.cfg.logger.Info("stsauth: STS answers again in a region that failed",
			slog.String("region", r.name), slog.Int("consecutive_failures", failures))
	}
}

// regionFailed counts a failure of r and backs it off.
func (ts *TokenSource) regionFailed(r *region, now time.Time) {
	r.mu.Lock()
	r.failures++
	r.retryAt.Store(now.Add(ts.backoffDelay(r.failures)).UnixNano())
	r.mu.Unlock()
}
