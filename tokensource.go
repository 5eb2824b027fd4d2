package stsauth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sts"
)

// GetWebIdentityTokenAPIClient is the one STS method a [TokenSource] uses.
// *sts.Client satisfies it, and so does any fake with the same signature.
type GetWebIdentityTokenAPIClient interface {
	GetWebIdentityToken(ctx context.Context, params *sts.GetWebIdentityTokenInput, optFns ...func(*sts.Options)) (*sts.GetWebIdentityTokenOutput, error)
}

// Timing constants of the cache. They are not options: they are margins for
// clocks and networks, not policy.
const (
	// expiryMargin is how long before its exp claim a token stops being
	// served, so it is still valid when it reaches a verifier whose clock
	// runs a little ahead. It shrinks to a quarter of the lifetime for
	// tokens shorter than four margins.
	expiryMargin = 10 * time.Second
	// refreshJitter is the largest fraction of the skew by which each
	// entry's refresh moment is moved earlier, so a fleet that started
	// together does not refresh together.
	refreshJitter = 0.1
	// backoffBase and backoffMax bound the retry delay after failed
	// fetches: full jitter over base·2^(failures-1), capped.
	backoffBase = time.Second
	backoffMax  = 30 * time.Second
	// backoffMin keeps full jitter from retrying at once.
	backoffMin = 50 * time.Millisecond
)

// ErrClosed is wrapped by the error of a [TokenSource.Token] call made after
// [TokenSource.Close].
var ErrClosed = errors.New("stsauth: token source closed")

// A Token is a web identity token (a JWT) minted by STS for one audience set.
//
// A Token is a credential. It keeps its JWT behind a pointer to an
// unexported type, so reflection-based printers (fmt's %v of a struct that
// holds a Token in an unexported field, for instance) show an address, never
// the JWT. Format, String, GoString, LogValue and MarshalText show the
// audience and expiry but never the JWT; encoding/json, encoding/xml and
// encoding/gob use MarshalText. Call [Token.Value] to use it.
type Token struct {
	b *bearer

	// Audience is the audience set the token was minted for.
	Audience Audience
	// Expiry is when the token expires by the local clock: the local moment
	// its fetch started plus its lifetime (exp − iat, capped by the
	// requested duration and by STS's Expiration), so a local clock that
	// disagrees with STS's does not change it.
	Expiry time.Time
	// Lifetime is how long the token lives: exp − iat by its own claims,
	// capped by the duration asked for and by STS's Expiration.
	Lifetime time.Duration
	// Shortened says why Lifetime is less than the duration the source was
	// configured with ([WithDuration]), or is [NotShortened].
	Shortened Shortening
}

// bearer is "Bearer " + the JWT, built once so requests do not allocate it.
// A Token holds only a pointer to it: fmt prints a pointer to a string as an
// address, at any depth and for any verb, so the JWT is out of reach of
// reflection-based printing. (A pointer to a struct would not do: fmt's
// bad-verb path prints the struct it points to.)
type bearer string

const bearerPrefix = "Bearer "

func newToken(aud Audience, jwt string, expiry time.Time) Token {
	b := bearer(bearerPrefix + jwt)
	return Token{b: &b, Audience: aud, Expiry: expiry}
}

// Value returns the JWT itself.
func (t Token) Value() string {
	if t.b == nil {
		return ""
	}
	return string(*t.b)[len(bearerPrefix):]
}

// bearerValue returns "Bearer " + the JWT, or "" for the zero Token.
func (t Token) bearerValue() string {
	if t.b == nil {
		return ""
	}
	return string(*t.b)
}

// Valid reports whether t holds a JWT that has not reached its expiry.
func (t Token) Valid() bool { return t.Value() != "" && time.Now().Before(t.Expiry) }

// String describes the token without its JWT.
func (t Token) String() string {
	return fmt.Sprintf("stsauth.Token{Audience: %v, Expiry: %v, JWT: %s}", t.Audience, t.Expiry.UTC().Format(time.RFC3339), redacted(t.Value()))
}

// GoString describes the token without its JWT.
func (t Token) GoString() string { return t.String() }

// Format implements [fmt.Formatter]: every verb and flag prints the
// description of [Token.String], quoted for %q, never the JWT.
func (t Token) Format(f fmt.State, verb rune) {
	if verb == 'q' {
		_, _ = io.WriteString(f, strconv.Quote(t.String()))
		return
	}
	_, _ = io.WriteString(f, t.String())
}

// LogValue describes the token to log/slog without its JWT.
func (t Token) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("audience", t.Audience.String()),
		slog.Time("expiry", t.Expiry),
		slog.String("jwt", redacted(t.Value())),
	)
}

// MarshalText describes the token without its JWT, so encoders such as
// encoding/json, encoding/xml and encoding/gob cannot leak it by accident.
func (t Token) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

func redacted(jwt string) string {
	if jwt == "" {
		return "none"
	}
	return "REDACTED"
}

// A TokenError reports a failure to get a token for an audience set. Err is
// the SDK's error (reach the STS error code with errors.As and
// smithy.APIError), the caller's context error, or [ErrClosed].
type TokenError struct {
	// Audience is the audience set the token was for.
	Audience Audience
	// Err is the underlying error.
	Err error
}

// Error names the audience set and the underlying error; it never holds a
// token, since only a successful fetch carries one.
func (e *TokenError) Error() string {
	return fmt.Sprintf("stsauth: get web identity token for %v: %v", e.Audience, e.Err)
}

// Unwrap returns the underlying error.
func (e *TokenError) Unwrap() error { return e.Err }

// A TokenSource mints web identity tokens with STS and caches them per
// audience set.
//
// The first Token call for an audience set makes one STS call, shared by all
// concurrent callers of that set. Afterwards callers get the cached token
// without waiting: once the token is within the refresh skew of its expiry
// (less a small per-entry jitter), the next caller starts exactly one
// background refresh and keeps getting the cached token meanwhile. If no
// caller comes in that window, a scheduler (one goroutine and one timer per
// TokenSource, started with its first token) refreshes every set used since
// its current token was minted, so a set used every 50 minutes with 1 h
// tokens never waits; a set unused for a whole token lifetime is left to
// expire and costs no STS call. A failed refresh is retried, by later calls
// or by the scheduler, with exponential backoff and full jitter, while the
// old token is served until shortly before it expires. With no usable token
// and STS failing, callers get the last error at once until the backoff
// allows another attempt, so a storm of requests is not a storm of STS
// calls. Failures every audience set would share (credentials, throttling,
// the network) back off the whole source, callers already waiting for a
// fetch slot included, and at most [DefaultMaxConcurrentFetches] STS calls
// (see [WithMaxConcurrentFetches]) run at once. However long the queue, no
// Token call waits longer than the fetch timeout ([WithFetchTimeout]).
// With fallback regions ([WithFallback]), a fetch that fails in one region
// in a way another may not (throttling, a 5xx, the network, a timeout) asks
// the next within the same timeout, and comes back to the primary once it
// answers again.
//
// A token's serving window comes from its own iat and exp claims, counted
// from the local moment its fetch started, so clock offsets between this
// host and STS do not matter. Its lifetime never extends past the expiry of
// the AWS credentials (see [WithCredentials]).
//
// The cache holds up to the configured number of audience sets and evicts
// by the CLOCK algorithm, a lock-free-on-hit approximation of least recently
// used.
//
// A TokenSource is safe for concurrent use by multiple goroutines. Call Close
// to stop its background refreshes.
type TokenSource struct {
	client    GetWebIdentityTokenAPIClient
	regions   []*region // the primary and its fallbacks; nil without fallbacks
	cfg       config
	metrics   *metrics
	lifecycle *lifecycleMetrics
	cache     cache

	// now, timerAt and jitter are time and randomness; tests in this
	// package replace them before the first call. timerAt returns a channel
	// that receives at (or soon after) at, and a stop function.
	now func() time.Time
	// realClock reports that now is time.Now, so a cache hit may read the
	// monotonic clock alone (monoNow); a test that replaces now clears it.
	realClock bool
	epoch     time.Time // time.Now() at creation, for monoNow
	timerAt   func(at time.Time) (<-chan time.Time, func() bool)
	jitter    func(max time.Duration) time.Duration
	spread    func(max time.Duration) time.Duration // of first refreshes
	// onScan, if set by a test, is called by the scheduler after each scan
	// once its timer is armed; fired tells whether the timer started it.
	onScan func(fired bool)
	// onFetched, if set by a test, is called by a fetch's goroutine once
	// the STS call has returned, before its flight ends.
	onFetched func()

	wake chan struct{} // pokes the scheduler; buffered 1
	// pokes counts pokes; parked is the count the scheduler had seen when
	// it last went to sleep, -1 while awake; tracked counts goroutines of
	// wg. Tests read them to know when the source is quiet.
	pokes        atomic.Int64
	parked       atomic.Int64
	tracked      atomic.Int64
	schedStarted atomic.Bool
	schedDone    chan struct{} // closed when the scheduler goroutine ends

	escalationLogged atomic.Bool // SessionDurationEscalationException logged once

	slots   chan struct{} // one value per STS call in flight
	backoff sourceBackoff // after failures every audience set shares
	mint    mintBudget    // for sets not cached
	churn   churn         // guarded by cache.mu

	closed  atomic.Bool
	closeMu sync.Mutex // guards wg.Add against Close's wg.Wait
	wg      sync.WaitGroup
	stop    context.Context // done after Close, to cancel detached fetches
	cancel  context.CancelFunc
}

// NewTokenSource returns a TokenSource that mints tokens with client,
// typically an *sts.Client. It makes no STS call. It fails, wrapping
// [ErrInvalidOption], if an option is outside STS's ranges.
//
// (Unlike most constructors in the style this package follows, it returns an
// error: bad configuration must fail at startup, not panic or fail later.)
func NewTokenSource(client GetWebIdentityTokenAPIClient, opts ...Option) (*TokenSource, error) {
	if client == nil {
		return nil, fmt.Errorf("stsauth: %w: nil STS client", ErrInvalidOption)
	}
	cfg := defaultConfig()
	for _, opt := range opts {
		if opt != nil {
			opt(&cfg)
		}
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if c, ok := client.(*sts.Client); ok && cfg.credentials == nil {
		cfg.credentials = c.Options().Credentials
		cfg.credentialsFromClient = cfg.credentials != nil
	}
	ts := &TokenSource{
		client:    client,
		cfg:       cfg,
		now:       time.Now,
		realClock: true,
		epoch:     time.Now(),
		timerAt:   realTimerAt,
		wake:      make(chan struct{}, 1),
		slots:     make(chan struct{}, cfg.maxFetches),
		schedDone: make(chan struct{}),
		jitter:    uniform,
		spread:    uniform,
	}
	ts.cache.size = cfg.cacheSize
	if len(cfg.fallbacks) > 0 {
		ts.regions = newRegions(client, cfg.fallbacks)
	}
	ts.mint.rate, ts.mint.burst = cfg.mintRate, float64(cfg.mintBurst)
	ts.stop, ts.cancel = context.WithCancel(context.Background())
	m, err := newMetrics(cfg.meterProvider, ts.cache.len)
	if err != nil {
		return nil, fmt.Errorf("stsauth: set up metrics: %w", err)
	}
	ts.metrics = m
	if ts.lifecycle, err = newLifecycleMetrics(cfg.meterProvider, ts.expiries); err != nil {
		return nil, fmt.Errorf("stsauth: set up metrics: %w", err)
	}
	ts.cache.onEvict = func(e *entry) {
		ts.metrics.evictions.Add(context.Background(), 1, e.attrs.add...)
		ts.cfg.logger.Debug("stsauth: evicted audience set from token cache", slog.String("audience", e.aud.String()))
		if n, warn := ts.churn.evict(ts.now(), ts.cfg.cacheSize); warn {
			ts.warnChurn(n)
		}
	}
	return ts, nil
}

// warnChurn tells WithCacheChurnFunc's function, or the log, that n sets
// were evicted within churnWindow.
func (ts *TokenSource) warnChurn(n int) {
	if ts.cfg.onChurn != nil {
		ts.cfg.onChurn(n, churnWindow)
		return
	}
	ts.cfg.logger.Warn("stsauth: token cache churning: audience sets are evicted to make room for others and cost an STS call each when they return; raise the cache size (WithCacheSize)",
		slog.Int("evictions", n), slog.Duration("window", churnWindow), slog.Int("cache_size", ts.cfg.cacheSize))
}

// uniform returns a random duration in [0, max), or 0 if max <= 0.
func uniform(max time.Duration) time.Duration {
	if max <= 0 {
		return 0
	}
	return rand.N(max)
}

// entry is the cache slot of one audience set.
type entry struct {
	aud   Audience
	attrs *audienceAttrs // metric options for this set, built once

	state atomic.Pointer[cached] // nil until the first token
	// used is the CLOCK reference bit: set by hits, cleared by the
	// eviction sweep. (cached.used is another bit: see there.)
	used atomic.Bool
	// refreshing is true while a fetch for this entry is planned or runs
	// (flight is set), so that hits in the refresh window check it without
	// taking mu.
	refreshing atomic.Bool

	// retryAt is when the backoff after the last failed fetch ends, in
	// Unix nanoseconds; 0 after a success. Atomic, so that a hit in the
	// refresh window checks it without taking mu.
	retryAt atomic.Int64

	mu       sync.Mutex // guards failures, lastErr and flight
	failures int
	lastErr  error   // the last fetch error, while failures > 0
	flight   *flight // the fetch planned or running, shared by its waiters
}

// cached is one token and the moments that govern it, immutable once stored.
type cached struct {
	tok       Token
	refreshAt time.Time // start a background refresh from here on
	expireAt  time.Time // stop serving from here on (exp less the margin)

	// used is set by the first cache hit on this token: the scheduler
	// refreshes only sets used since their current token was minted.
	used atomic.Bool
	// replacement is set on a token fetched after the one before it was
	// invalidated; it is not invalidated in turn.
	replacement bool
}

// dropped is the state of an entry whose token [TokenSource.Invalidate]
// dropped: no token (its expireAt is the zero time), and the next token
// fetched is a replacement. A marker in the state itself, rather than a flag
// beside it, keeps "drop this token" and "the next one replaces it" one
// atomic step.
var dropped = &cached{}

// Token returns a valid token for aud, from the cache when it can. It makes
// an STS call only when no usable token is cached, and then waits for that
// call (shared with every concurrent caller of aud) or for ctx to end,
// whichever is first; the call itself carries on for the others.
//
// Every error is a *[TokenError].
func (ts *TokenSource) Token(ctx context.Context, aud Audience) (Token, error) {
	if aud.IsZero() {
		return Token{}, &TokenError{Audience: aud, Err: fmt.Errorf("%w: zero Audience", ErrInvalidAudience)}
	}
	if ts.closed.Load() {
		return Token{}, &TokenError{Audience: aud, Err: ErrClosed}
	}
	// The hot path: a map read and an atomic load, no lock.
	e := ts.cache.get(aud.key)
	if e != nil {
		if c := e.state.Load(); c != nil {
			now := ts.monoNow()
			if now.Before(c.expireAt) {
				if !e.used.Load() {
					e.used.Store(true)
				}
				if !c.used.Load() {
					c.used.Store(true)
				}
				if !now.Before(c.refreshAt) {
					ts.refreshAhead(e, ts.now(), triggerRequest)
					e.attrs.stale.Add()
				}
				e.attrs.hits.Add()
				return c.tok, nil
			}
		}
	} else if e = ts.cache.add(aud, ts.newEntry); e == nil {
		ts.metrics.recordMintRefused(ctx, ts.metrics.attrsFor(aud))
		return Token{}, &TokenError{Audience: aud, Err: ErrMintRateExceeded}
	}
	ts.metrics.misses.Add(ctx, 1, e.attrs.add...)
	return ts.fetchWait(ctx, e)
}

// monoNow returns the time for comparing with times of this source's clock
// that carry a monotonic reading, as expireAt and refreshAt do (they are
// derived from ts.now() at a fetch's start): with the real clock, the
// creation time advanced by the monotonic time since, which reads one clock
// where time.Now reads two (wall and monotonic). Its wall reading does not
// follow steps of the wall clock, so it is for Before and After only.
func (ts *TokenSource) monoNow() time.Time {
	if ts.realClock {
		return ts.epoch.Add(time.Since(ts.epoch))
	}
	return ts.now()
}

// newEntry makes the cache entry of a set the source does not hold, if the
// mint budget has a mint for it; else it returns nil.
func (ts *TokenSource) newEntry(aud Audience) *entry {
	if !ts.mint.take(ts.now()) {
		return nil
	}
	return &entry{aud: aud, attrs: ts.metrics.attrsFor(aud)}
}

// goTracked runs f in a goroutine that Close waits for. It reports false,
// running nothing, once Close has begun.
func (ts *TokenSource) goTracked(f func()) bool {
	ts.closeMu.Lock()
	defer ts.closeMu.Unlock()
	if ts.closed.Load() {
		return false
	}
	ts.wg.Add(1)
	ts.tracked.Add(1)
	go func() {
		defer ts.wg.Done()
		defer ts.tracked.Add(-1)
		f()
	}()
	return true
}

// fetch makes one STS call for e and records its outcome: the failure and
// the backoff that follows it, or the end of any backoff; the new token it
// returns is stored by [TokenSource.finish]. parent supplies
// values such as trace context; its cancellation is ignored, because the
// result is shared by callers that may still be waiting. The call has its own
// timeout and ends early only when the source is closed, failing with
// [ErrClosed] and recording no failure.
func (ts *TokenSource) fetch(parent context.Context, e *entry, trigger refreshTrigger) (*cached, error) {
	// fetch runs in a goroutine of goTracked, which Close waits for.
	if ts.closed.Load() {
		return nil, ErrClosed
	}

	ctx, cancel := context.WithTimeout(parent, ts.cfg.fetchTimeout)
	defer cancel()
	defer context.AfterFunc(ts.stop, cancel)()

	ts.lifecycle.recordRefresh(ctx, e.attrs, trigger)
	first := e.state.Load() == nil
	start := ts.now()
	out, requested, shortened, answered, err := ts.call(ctx, e, start.Add(ts.cfg.fetchTimeout))
	now := ts.now()
	var lifetime time.Duration
	if err == nil {
		switch {
		case out == nil || out.WebIdentityToken == nil || *out.WebIdentityToken == "":
			err = errors.New("STS returned no token")
		case out.Expiration == nil:
			err = errors.New("STS returned a token without an expiration")
		default:
			lifetime, err = tokenLifetime(*out.WebIdentityToken, *out.Expiration, requested)
		}
	}
	if err == nil && !start.Add(lifetime).After(now) {
		err = fmt.Errorf("STS returned a token of %v that the %v fetch outlasted", lifetime, now.Sub(start))
	}
	if err != nil && ts.stop.Err() != nil {
		// Close cancelled the call: the source is shutting down, not
		// failing, so there is nothing to log, count or back off from.
		return nil, ErrClosed
	}
	ts.metrics.recordFetch(ctx, e.attrs, answered.label(), now.Sub(start), err)
	if err != nil {
		ts.recordFailure(e, now, err)
		return nil, err
	}

	if lifetime < requested-time.Second {
		shortened = ShortenedBySTS
	}
	ts.recordSuccess(e)
	c := ts.newCached(e.aud, *out.WebIdentityToken, start, lifetime, now, first)
	c.tok.Lifetime, c.tok.Shortened = lifetime, shortened
	return c, nil
}

// newCached works out when a token whose fetch started at start and which
// lives for lifetime should be refreshed and when it must no longer be
// served. Anchoring at the start of the fetch, not at the token's iat, keeps
// the local clock's offset from STS's out of it, and errs early by the
// fetch's duration.
//
// The first token of an entry (first) is refreshed at a uniformly random
// moment between now and its usual refresh moment: a fleet of sources
// started together, or a source that met many audience sets at once, would
// otherwise refresh every set together, lifetime after lifetime, since each
// refresh is timed from the one before. Spread once, the refreshes stay
// spread; it costs at most one extra STS call per set.
func (ts *TokenSource) newCached(aud Audience, jwt string, start time.Time, lifetime time.Duration, now time.Time, first bool) *cached {
	exp := start.Add(lifetime)
	margin := min(expiryMargin, lifetime/4)
	c := &cached{
		tok:      newToken(aud, jwt, exp),
		expireAt: exp.Add(-margin),
	}
	skew := ts.cfg.skew
	if lifetime <= skew {
		// STS granted less than asked for: refreshing skew before expiry
		// would mean refreshing constantly. Refresh half way instead.
		c.refreshAt = now.Add(exp.Sub(now) / 2)
	} else {
		c.refreshAt = exp.Add(-skew - ts.jitter(time.Duration(float64(skew)*refreshJitter)))
		if first && c.refreshAt.After(now) {
			c.refreshAt = c.refreshAt.Add(-ts.spread(c.refreshAt.Sub(now)))
		}
	}
	if c.refreshAt.After(c.expireAt) {
		c.refreshAt = c.expireAt
	}
	return c
}

// Close stops background refreshes and cancels fetches in flight, then waits
// for their goroutines to end. Token calls after Close fail with [ErrClosed].
// Close is idempotent and always returns nil.
func (ts *TokenSource) Close() error {
	ts.closeMu.Lock()
	ts.closed.Store(true)
	ts.closeMu.Unlock()
	ts.cancel()
	if ts.schedStarted.Load() {
		<-ts.schedDone
	}
	ts.wg.Wait()
	ts.metrics.close()
	ts.lifecycle.close()
	return nil
}
