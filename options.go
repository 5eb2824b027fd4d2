package stsauth

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts/types"
	"go.opentelemetry.io/otel/metric"
)

// Signing algorithms that STS GetWebIdentityToken accepts.
const (
	// RS256 is RSASSA-PKCS1-v1_5 with SHA-256, the default.
	RS256 = "RS256"
	// ES384 is ECDSA with P-384 and SHA-384.
	ES384 = "ES384"
)

// Defaults and limits of the options.
const (
	// DefaultDuration is the token lifetime requested from STS.
	DefaultDuration = time.Hour
	// MinDuration and MaxDuration bound the lifetime STS will issue.
	MinDuration = 60 * time.Second
	MaxDuration = time.Hour
	// DefaultRefreshSkew is how long before expiry a token is refreshed.
	DefaultRefreshSkew = 5 * time.Minute
	// DefaultCacheSize is how many audience sets the cache holds.
	DefaultCacheSize = 1024
	// DefaultFetchTimeout bounds how long a Token call waits for a token
	// from STS (see [WithFetchTimeout]).
	DefaultFetchTimeout = 30 * time.Second
	// MaxTags, MaxTagKeyLength and MaxTagValueLength are STS's limits on
	// session tags sent with GetWebIdentityToken.
	MaxTags           = 50
	MaxTagKeyLength   = 128
	MaxTagValueLength = 256
)

// ErrInvalidOption is wrapped by every error that [NewTokenSource] returns
// for a bad option.
var ErrInvalidOption = errors.New("invalid option")

// An Option configures a [TokenSource]. Options are applied once, by
// [NewTokenSource], which validates the result.
type Option func(*config)

// config is the resolved, immutable configuration of a TokenSource.
type config struct {
	algorithm     string
	duration      time.Duration
	skew          time.Duration
	skewSet       bool
	tags          []types.Tag
	cacheSize     int
	fetchTimeout  time.Duration
	meterProvider metric.MeterProvider
	logger        *slog.Logger
	credentials   aws.CredentialsProvider
	// credentialsFromClient: credentials is the *sts.Client's own provider.
	credentialsFromClient bool
	maxFetches            int
	tokenHook             func(Token)
	mintRate              float64
	mintBurst             int
	onChurn               func(evictions int, window time.Duration)
	fallbacks             []GetWebIdentityTokenAPIClient
}

func defaultConfig() config {
	return config{
		algorithm:    RS256,
		duration:     DefaultDuration,
		skew:         DefaultRefreshSkew,
		cacheSize:    DefaultCacheSize,
		fetchTimeout: DefaultFetchTimeout,
		maxFetches:   DefaultMaxConcurrentFetches,
		mintRate:     DefaultMintRate,
		mintBurst:    DefaultMintBurst,
	}
}

// WithSigningAlgorithm sets the JWT signing algorithm, [RS256] (the default)
// or [ES384].
func WithSigningAlgorithm(alg string) Option {
	return func(c *config) { c.algorithm = alg }
}

// WithDuration sets the token lifetime requested from STS, from [MinDuration]
// to [MaxDuration] in whole seconds; the default is [DefaultDuration].
func WithDuration(d time.Duration) Option {
	return func(c *config) { c.duration = d }
}

// WithRefreshSkew sets how long before a token's expiry the background
// refresh starts; it must be positive and shorter than the duration. The
// default is [DefaultRefreshSkew], or half the duration when no skew is set
// and the duration is not longer than DefaultRefreshSkew (a 2-minute token
// is refreshed 1 minute before it expires).
func WithRefreshSkew(d time.Duration) Option {
	return func(c *config) { c.skew, c.skewSet = d, true }
}

// WithTags sets session tags that STS adds to every token as custom claims:
// at most [MaxTags], keys of 1 to [MaxTagKeyLength] characters, values of at
// most [MaxTagValueLength]. A nil or empty map sends no tags.
func WithTags(tags map[string]string) Option {
	return func(c *config) {
		c.tags = nil
		for _, k := range slices.Sorted(maps.Keys(tags)) {
			c.tags = append(c.tags, types.Tag{Key: &k, Value: new(tags[k])})
		}
	}
}

// WithCacheSize sets how many audience sets the cache holds, at least 1; the
// default is [DefaultCacheSize]. Past it, the least recently used set is
// evicted (approximately: see [TokenSource]).
func WithCacheSize(n int) Option {
	return func(c *config) { c.cacheSize = n }
}

// WithFetchTimeout bounds how long a [TokenSource.Token] call that finds no
// usable token waits for one: the wait for a fetch slot (see
// [WithMaxConcurrentFetches]), the shared STS fetch and the SDK's own
// retries, all counted from the moment the call asked. Past it the call fails
// with an error wrapping [context.DeadlineExceeded]; a fetch already running
// carries on for other callers, and ends, failing the same way, at most this
// long after it started. It must be positive. The default is
// [DefaultFetchTimeout].
func WithFetchTimeout(d time.Duration) Option {
	return func(c *config) { c.fetchTimeout = d }
}

// WithMeterProvider sets where metrics go. A nil provider, the default,
// uses the global one from go.opentelemetry.io/otel.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(c *config) { c.meterProvider = mp }
}

// WithLogger sets the logger for failed fetches and a shortened token
// duration (Warn), invalidated tokens (Info) and evictions (Debug); records
// name the audience set, never a token. A nil logger, the default, discards
// records.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) { c.logger = l }
}

// WithCredentials sets the AWS credentials provider whose expiry bounds
// token lifetimes: when the credentials can expire (aws.Credentials.CanExpire),
// each token is requested for at most the time they have left less a
// minute, and never for less than [MinDuration]. When the client passed to
// [NewTokenSource] is an *sts.Client, its own provider is used unless this
// option sets another; a nil provider keeps that default.
func WithCredentials(p aws.CredentialsProvider) Option {
	return func(c *config) { c.credentials = p }
}

// WithMaxConcurrentFetches bounds how many STS calls the source makes at
// once, across all audience sets, from 1 to [MaxMaxConcurrentFetches]; the
// default is [DefaultMaxConcurrentFetches]. A caller whose audience set needs
// a fetch while every slot is taken waits for one, bounded by its context;
// background refreshes never wait, they are retried when a slot frees.
func WithMaxConcurrentFetches(n int) Option {
	return func(c *config) { c.maxFetches = n }
}

// WithTokenHook sets a function that is told of each token the source
// fetches, once it is cached: an audience set's first token, each refresh
// (by a request or the scheduler), and each replacement after
// [TokenSource.Invalidate]. It is called with the new token in the
// goroutine that fetched it, before the callers waiting for that fetch get
// it, so it must return quickly and must not call the source's Token; a
// typical hook hands the token, or a signal, to a goroutine of its own
// without blocking. It suits code that keeps a copy of the token elsewhere,
// such as a file that other processes read. A nil hook, the default, is
// none.
func WithTokenHook(f func(Token)) Option {
	return func(c *config) { c.tokenHook = f }
}

// WithMintRate bounds how fast the source mints tokens for audience sets it
// does not hold, with a token bucket of burst mints refilled at perSecond a
// second. A Token call whose set has no cache entry (never asked for, or
// evicted since) takes one mint; refreshes of cached sets, the replacement
// of an invalidated token and the retries after a failed fetch take none.
// With the bucket empty such a call fails at once with an error wrapping
// [ErrMintRateExceeded], without an STS call and without taking a cache
// slot, so the sets already cached keep being served; it is counted in
// token.fetch.count with error_class "mint_rate_exceeded". perSecond 0 means
// no limit; otherwise perSecond must be positive and burst at least 1. The
// defaults are [DefaultMintRate] and [DefaultMintBurst].
func WithMintRate(perSecond float64, burst int) Option {
	return func(c *config) { c.mintRate, c.mintBurst = perSecond, burst }
}

// WithCacheChurnFunc sets the function told when the cache churns: when,
// within a minute, more audience sets than a tenth of the cache size were
// evicted to make room for others, each of which costs an STS call when it
// comes back. It is called at most once a minute, with the evictions counted
// so far in that minute and the length of the window, from the goroutine
// whose Token call evicted, so it must not block; it must not call the
// source. If nil, the default, the source logs a warning that names
// [WithCacheSize], the cure.
func WithCacheChurnFunc(f func(evictions int, window time.Duration)) Option {
	return func(c *config) { c.onChurn = f }
}

// validate checks c against STS's ranges and fills dependent defaults.
func (c *config) validate() error {
	if c.algorithm != RS256 && c.algorithm != ES384 {
		return fmt.Errorf("stsauth: %w: signing algorithm %q, want %s or %s", ErrInvalidOption, c.algorithm, RS256, ES384)
	}
	if c.duration < MinDuration || c.duration > MaxDuration || c.duration%time.Second != 0 {
		return fmt.Errorf("stsauth: %w: duration %v, want whole seconds from %v to %v", ErrInvalidOption, c.duration, MinDuration, MaxDuration)
	}
	if !c.skewSet && c.skew >= c.duration {
		c.skew = c.duration / 2
	}
	if c.skew <= 0 || c.skew >= c.duration {
		return fmt.Errorf("stsauth: %w: refresh skew %v, want more than 0 and less than the duration %v", ErrInvalidOption, c.skew, c.duration)
	}
	if len(c.tags) > MaxTags {
		return fmt.Errorf("stsauth: %w: %d tags, want at most %d", ErrInvalidOption, len(c.tags), MaxTags)
	}
	for _, t := range c.tags {
		if n := utf8.RuneCountInString(*t.Key); n < 1 || n > MaxTagKeyLength {
			return fmt.Errorf("stsauth: %w: tag key %q, want 1 to %d characters", ErrInvalidOption, *t.Key, MaxTagKeyLength)
		}
		if n := utf8.RuneCountInString(*t.Value); n > MaxTagValueLength {
			return fmt.Errorf("stsauth: %w: tag %q value of %d characters, want at most %d", ErrInvalidOption, *t.Key, n, MaxTagValueLength)
		}
	}
	if c.cacheSize < 1 {
		return fmt.Errorf("stsauth: %w: cache size %d, want at least 1", ErrInvalidOption, c.cacheSize)
	}
	if c.fetchTimeout <= 0 {
		return fmt.Errorf("stsauth: %w: fetch timeout %v, want more than 0", ErrInvalidOption, c.fetchTimeout)
	}
	if c.maxFetches < 1 || c.maxFetches > MaxMaxConcurrentFetches {
		return fmt.Errorf("stsauth: %w: max concurrent fetches %d, want 1 to %d", ErrInvalidOption, c.maxFetches, MaxMaxConcurrentFetches)
	}
	if math.IsNaN(c.mintRate) || math.IsInf(c.mintRate, 0) || c.mintRate < 0 {
		return fmt.Errorf("stsauth: %w: mint rate %v a second, want 0 (no limit) or more", ErrInvalidOption, c.mintRate)
	}
	if c.mintRate > 0 && c.mintBurst < 1 {
		return fmt.Errorf("stsauth: %w: mint burst %d, want at least 1", ErrInvalidOption, c.mintBurst)
	}
	for i, f := range c.fallbacks {
		if f == nil {
			return fmt.Errorf("stsauth: %w: fallback client %d is nil", ErrInvalidOption, i+1)
		}
	}
	if c.logger == nil {
		c.logger = slog.New(slog.DiscardHandler)
	}
	return nil
}
