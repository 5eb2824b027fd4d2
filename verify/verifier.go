package verify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"go.opentelemetry.io/otel/metric"
)

// Defaults and limits of [Config].
const (
	// DefaultLeeway is the clock skew allowed on exp, iat and nbf.
	DefaultLeeway = 30 * time.Second
	// MaxLeeway is the largest Config.Leeway accepted.
	MaxLeeway = 5 * time.Minute
	// DefaultMaxLifetime is the longest exp - iat accepted: the longest
	// lifetime STS gives a token.
	DefaultMaxLifetime = time.Hour
	// DefaultFetchTimeout bounds one fetch of an issuer's keys (discovery
	// and JWKS together).
	DefaultFetchTimeout = 10 * time.Second
	// DefaultRefetchCooldown is the shortest time between two fetches of an
	// issuer's keys caused by unknown kids.
	DefaultRefetchCooldown = 30 * time.Second
	// MaxTokenSize is the largest token accepted, in bytes.
	MaxTokenSize = 64 << 10
	// maxKeyIDLength is the longest kid accepted, in bytes; AWS's look
	// like "RSA_0" and "EC384_0".
	maxKeyIDLength = 256
)

// signingAlgorithms are the algorithms STS signs with; no other is accepted.
var signingAlgorithms = []jose.SignatureAlgorithm{jose.RS256, jose.ES384}

// Issuer is one trusted token issuer.
type Issuer struct {
	// URL is the issuer, exactly as the iss claim reads: for AWS the
	// account's https://<id>.tokens.sts.global.api.aws (see `aws iam
	// get-outbound-web-identity-federation-info`). It must be https, with
	// no query, fragment, user info or trailing slash. An http URL is
	// accepted only for a loopback host and with
	// [Config.AllowInsecureLoopbackIssuers].
	URL string
	// Account, if set, is the 12-digit AWS account the issuer belongs to:
	// a token from this issuer must then carry the same aws_account claim.
	Account string
}

// Config configures a [Verifier]. Issuers, and Audiences unless
// SkipAudienceCheck is set, are required; every other field has a default.
type Config struct {
	// Issuers are the trusted issuers; a token from any other is refused
	// without a network call. There is no organization-wide issuer: list
	// each account's.
	Issuers []Issuer
	// Audiences are the accepted audiences: a token passes if one of its
	// aud values is one of these.
	Audiences []string
	// SkipAudienceCheck accepts any audience. It is for tools that inspect
	// tokens, such as `stsproxy verify`, never for a service that accepts
	// them: a token meant for another service would pass.
	SkipAudienceCheck bool
	// Leeway is the clock skew allowed on exp, iat and nbf, 0 to 5 minutes.
	// If zero, [DefaultLeeway] (30 s) is used; a negative value means none.
	Leeway time.Duration
	// MaxLifetime is the longest exp - iat accepted (plus Leeway), 1 minute
	// to 1 hour. If zero, [DefaultMaxLifetime] (1 h) is used.
	MaxLifetime time.Duration
	// Policy decides which principals may call, from the AWS claims. The
	// zero Policy allows every valid token.
	Policy Policy
	// ReplayCacheSize, if positive, turns on the replay guard: the jti of
	// each accepted token is remembered until the token expires, up to this
	// many tokens, and a token whose jti was seen is refused with
	// [ErrReplay]. When full, the entries closest to expiry are forgotten
	// first, and counted (verify.replay.eviction.count): a token forgotten
	// before it expires could be replayed, so any count means the guard is
	// too small for the rate of distinct tokens times their lifetime. The guard sees only this Verifier's tokens: replicas do not
	// share it. If zero, there is no replay guard.
	ReplayCacheSize int
	// TokenCacheSize is how many verified tokens are remembered, so that a
	// token sent again (a sender reuses one for up to an hour) is not
	// parsed and its signature not checked again. A token is remembered by
	// the SHA-256 of the whole token, never the token itself, and only a
	// token identical in every byte is answered from the cache. On every
	// use its exp (with the leeway), iat and nbf are checked again, the key
	// that signed it must still be in the issuer's key set (a token whose
	// key a refresh or rotation removed is verified anew, and fails), and
	// the policy and the replay guard apply as to a new token. When full,
	// expired tokens are forgotten first, then arbitrary ones. Each entry
	// holds the token's claims, about 1.1 KiB for a token with no tags, so
	// the default takes about 5 MiB when full. If zero,
	// [DefaultTokenCacheSize] (4096) is used; a negative value turns the
	// cache off.
	TokenCacheSize int
	// AllowInsecureLoopbackIssuers accepts http issuers on loopback hosts
	// (localhost, 127.0.0.0/8, ::1), such as the ststest emulator and
	// `stsproxy --local-sts`. Never needed with AWS.
	AllowInsecureLoopbackIssuers bool
	// HTTPClient fetches discovery documents and keys. Its redirect policy
	// is replaced: redirects are never followed. If nil, a client using
	// [http.DefaultTransport] is used.
	HTTPClient *http.Client
	// FetchTimeout bounds each fetch of an issuer's keys. If zero,
	// [DefaultFetchTimeout] (10 s) is used.
	FetchTimeout time.Duration
	// RefetchCooldown is the shortest time between fetches of an issuer's
	// keys caused by unknown kids; a request with an unknown kid inside it
	// fails at once. If zero, [DefaultRefetchCooldown] (30 s) is used.
	RefetchCooldown time.Duration
	// MeterProvider provides the meter for the verifier's metrics. If nil,
	// the global provider is used.
	MeterProvider metric.MeterProvider
	// Logger receives key-fetch failures. It never receives tokens. If nil,
	// [slog.Default] is used.
	Logger *slog.Logger
	// Now is the clock that exp, iat, nbf, key refreshes and the refetch
	// cooldown are measured against. If nil, [time.Now] is used. Tests set
	// it to share a fake clock with [github.com/stsauth/stsauth/ststest.Server.Now].
	Now func() time.Time
}

// Verifier verifies AWS outbound federation tokens from a fixed set of
// issuers. Create one with [New] and share it: its key caches are per
// Verifier. A Verifier is safe for concurrent use by multiple goroutines.
type Verifier struct {
	issuers      map[string]*issuer // by URL
	issuerList   []*issuer          // in Config order
	audiences    []string
	skipAudience bool
	leeway       time.Duration
	maxLifetime  time.Duration
	policy       *compiledPolicy
	replay       *replayGuard // nil without a replay guard
	cache        *tokenCache  // nil with Config.TokenCacheSize < 0
	client       *http.Client
	fetchTimeout time.Duration
	cooldown     time.Duration
	metrics      *metrics
	logger       *slog.Logger
	now          func() time.Time // the clock; tests replace it
	fetching     sync.WaitGroup   // running fetches, for tests
	waits        atomic.Int64     // requests that waited on a fetch, for tests
}

// New returns a Verifier for cfg, or an error naming the first invalid
// field. It makes no network call: keys are fetched on first use, or by
// [Verifier.Prime].
func New(cfg Config) (*Verifier, error) {
	v := &Verifier{
		issuers:      make(map[string]*issuer, len(cfg.Issuers)),
		audiences:    slices.Clone(cfg.Audiences),
		skipAudience: cfg.SkipAudienceCheck,
		leeway:       cfg.Leeway,
		maxLifetime:  cfg.MaxLifetime,
		fetchTimeout: cfg.FetchTimeout,
		cooldown:     cfg.RefetchCooldown,
		logger:       cfg.Logger,
		now:          time.Now,
	}
	if len(cfg.Issuers) == 0 {
		return nil, errors.New("verify: Config.Issuers is empty; name at least one trusted issuer")
	}
	for i, c := range cfg.Issuers {
		is, err := newIssuer(c, cfg.AllowInsecureLoopbackIssuers)
		if err != nil {
			return nil, fmt.Errorf("verify: Config.Issuers[%d]: %w", i, err)
		}
		if _, dup := v.issuers[is.url]; dup {
			return nil, fmt.Errorf("verify: Config.Issuers[%d]: %s is listed twice", i, is.url)
		}
		v.issuers[is.url] = is
		v.issuerList = append(v.issuerList, is)
	}
	switch {
	case len(v.audiences) == 0 && !v.skipAudience:
		return nil, errors.New("verify: Config.Audiences is empty; name the audiences this service accepts")
	case slices.Contains(v.audiences, ""):
		return nil, errors.New("verify: Config.Audiences has an empty audience")
	}
	switch {
	case v.leeway == 0:
		v.leeway = DefaultLeeway
	case v.leeway < 0:
		v.leeway = 0
	case v.leeway > MaxLeeway:
		return nil, fmt.Errorf("verify: Config.Leeway %s is out of range, 0 to %s", cfg.Leeway, MaxLeeway)
	}
	switch {
	case v.maxLifetime == 0:
		v.maxLifetime = DefaultMaxLifetime
	case v.maxLifetime < time.Minute || v.maxLifetime > time.Hour:
		return nil, fmt.Errorf("verify: Config.MaxLifetime %s is out of range, 1m to 1h", cfg.MaxLifetime)
	}
	switch {
	case v.fetchTimeout == 0:
		v.fetchTimeout = DefaultFetchTimeout
	case v.fetchTimeout < 0:
		return nil, fmt.Errorf("verify: Config.FetchTimeout %s must be positive", cfg.FetchTimeout)
	}
	switch {
	case v.cooldown == 0:
		v.cooldown = DefaultRefetchCooldown
	case v.cooldown < 0:
		return nil, fmt.Errorf("verify: Config.RefetchCooldown %s must be positive", cfg.RefetchCooldown)
	}
	if cfg.ReplayCacheSize < 0 {
		return nil, fmt.Errorf("verify: Config.ReplayCacheSize %d must not be negative", cfg.ReplayCacheSize)
	}
	if cfg.ReplayCacheSize > 0 {
		v.replay = newReplayGuard(cfg.ReplayCacheSize)
	}
	switch {
	case cfg.TokenCacheSize == 0:
		v.cache = newTokenCache(DefaultTokenCacheSize)
	case cfg.TokenCacheSize > 0:
		v.cache = newTokenCache(cfg.TokenCacheSize)
	}
	var err error
	if v.policy, err = compilePolicy(cfg.Policy); err != nil {
		return nil, err
	}
	if v.logger == nil {
		v.logger = slog.Default()
	}
	if cfg.Now != nil {
		v.now = cfg.Now
	}
	c := &http.Client{}
	if cfg.HTTPClient != nil {
		*c = *cfg.HTTPClient
	}
	c.CheckRedirect = func(*http.Request, []*http.Request) error {
		return errors.New("verify: redirects are not followed when fetching keys")
	}
	v.client = c
	if v.metrics, err = newMetrics(cfg.MeterProvider, v.issuerList); err != nil {
		return nil, fmt.Errorf("verify: create metrics: %w", err)
	}
	return v, nil
}

// newIssuer checks c and returns its cache.
func newIssuer(c Issuer, allowLoopbackHTTP bool) (*issuer, error) {
	u, err := url.Parse(c.URL)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return nil, fmt.Errorf("URL %q is not an absolute URL", c.URL)
	}
	switch {
	case u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return nil, fmt.Errorf("URL %q must have no user info, query or fragment", c.URL)
	case strings.HasSuffix(c.URL, "/"):
		return nil, fmt.Errorf("URL %q must not end in a slash: it must read exactly as the iss claim", c.URL)
	case u.Scheme == "https":
	case u.Scheme == "http" && isLoopbackHost(u.Hostname()):
		if !allowLoopbackHTTP {
			return nil, fmt.Errorf("URL %q is http: set Config.AllowInsecureLoopbackIssuers to trust a loopback test issuer", c.URL)
		}
	default:
		return nil, fmt.Errorf("URL %q must be https (http only for loopback hosts)", c.URL)
	}
	if c.Account != "" && (len(c.Account) != 12 || strings.Trim(c.Account, "0123456789") != "") {
		return nil, fmt.Errorf("account %q is not a 12-digit AWS account ID", c.Account)
	}
	return &issuer{
		url:     c.URL,
		origin:  originOf(u),
		account: c.Account,
	}, nil
}

// isLoopbackHost reports whether host is localhost or a loopback IP. Not
// "localhost.": Go's resolver looks that up in DNS, not the hosts file.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Zone() == "" && ip.Unmap().IsLoopback()
}

// Verify checks raw, a compact JWS, and returns its claims. In order: the
// size and shape; the algorithm (RS256 or ES384 only); the issuer (one of
// Config.Issuers, else refused before any network call); the signature,
// with the key the kid names, of the type alg names; exp, iat and nbf
// within the leeway; the lifetime; the audience; the account binding; the
// policy; and last the replay guard. Header fields jku, x5u, x5c and jwk are
// ignored: keys come only from the issuer's own JWKS.
//
// A token that passed up to the account binding is remembered (see
// [Config.TokenCacheSize]); the same token again is answered from memory
// after checking the times, that its key is still published, the policy
// and the replay guard. The [Claims] returned are the caller's own, but
// their slices and maps (Audience, OUPath, the tags, Raw) are shared with
// other calls for the same token: do not modify them.
//
// Keys are cached per issuer. ctx bounds only this call's wait for keys;
// the fetch itself is shared and runs under its own timeout. Every error is
// an [*Error] that matches one of the package's sentinel errors with
// [errors.Is].
func (v *Verifier) Verify(ctx context.Context, raw string) (*Claims, error) {
	c, err := v.verify(ctx, raw)
	v.metrics.recordVerify(ctx, err)
	return c, err
}

func (v *Verifier) verify(ctx context.Context, raw string) (*Claims, error) {
	if len(raw) > MaxTokenSize {
		return nil, newError(ErrMalformed, fmt.Sprintf("token is %d bytes, more than %d", len(raw), MaxTokenSize), nil)
	}
	var h tokenHash
	if v.cache != nil {
		h = hashToken(raw)
		now := v.now()
		if e := v.cached(ctx, &h, now); e != nil {
			if err := v.checkTimes(e.claims.Expiry, e.claims.IssuedAt, e.claims.NotBefore, now); err != nil {
				v.cache.remove(&h, e)
				return nil, err
			}
			c := e.claims
			return v.admit(ctx, &c, now)
		}
	}
	if !compactJWSChars(raw) {
		return nil, newError(ErrMalformed, "token is not three base64url parts separated by dots", nil)
	}
	jws, err := jose.ParseSignedCompact(raw, signingAlgorithms)
	if err != nil {
		if _, ok := errors.AsType[*jose.ErrUnexpectedSignatureAlgorithm](err); ok {
			return nil, newError(ErrAlgorithm, "alg must be RS256 or ES384", nil)
		}
		return nil, newError(ErrMalformed, "not a compact JWS", nil)
	}
	hdr := jws.Signatures[0].Header
	payload := jws.UnsafePayloadWithoutVerification()
	w, err := decodeClaims(payload)
	if err != nil {
		return nil, newError(ErrMalformed, err.Error(), nil)
	}
	is := v.issuers[w.Iss]
	if is == nil {
		return nil, newError(ErrUntrustedIssuer, fmt.Sprintf("iss %q", truncate(w.Iss)), nil)
	}
	if hdr.KeyID == "" {
		return nil, newError(ErrUnknownKey, "token has no kid", nil)
	}
	if len(hdr.KeyID) > maxKeyIDLength {
		// No issuer publishes such a kid: refuse it before it can cause a
		// fetch or fill an error message.
		return nil, newError(ErrUnknownKey, fmt.Sprintf("kid of %d bytes, more than %d", len(hdr.KeyID), maxKeyIDLength), nil)
	}
	now := v.now()
	ks, keys, err := v.key(ctx, is, hdr.KeyID, now)
	if err != nil {
		return nil, err
	}
	var key verifyKey
	for _, k := range keys {
		if string(k.alg) == hdr.Algorithm {
			key = k
			break
		}
	}
	if key.key == nil {
		return nil, newError(ErrAlgorithm, fmt.Sprintf("kid %q names a key that is not for %s", hdr.KeyID, hdr.Algorithm), nil)
	}
	if _, err := jws.Verify(key.key); err != nil {
		return nil, newError(ErrSignature, fmt.Sprintf("kid %q", hdr.KeyID), nil)
	}
	if w.Exp == nil {
		return nil, newError(ErrMalformed, "no exp claim", nil)
	}
	if w.Iat == nil {
		return nil, newError(ErrMalformed, "no iat claim", nil)
	}
	var nbf time.Time
	if w.Nbf != nil {
		nbf = w.Nbf.t
	}
	if err := v.checkTimes(w.Exp.t, w.Iat.t, nbf, now); err != nil {
		return nil, err
	}
	if !v.skipAudience && !slices.ContainsFunc(w.Aud, func(a string) bool { return slices.Contains(v.audiences, a) }) {
		return nil, newError(ErrAudience, fmt.Sprintf("aud %s, want one of %q", audienceDetail(w.Aud), v.audiences), nil)
	}
	c := w.claims(payload)
	if is.account != "" && c.AWS.Account != is.account {
		return nil, newError(ErrAccount, fmt.Sprintf("aws_account %q, issuer %s belongs to %s", truncate(c.AWS.Account), is.url, is.account), nil)
	}
	if v.cache != nil {
		e := &cacheEntry{is: is, kid: hdr.KeyID, key: key, until: c.Expiry.Add(v.leeway), claims: *c}
		e.keys.Store(ks)
		v.cache.add(&h, e, now)
	}
	return v.admit(ctx, c, now)
}

// cached returns the cache's entry for the token whose hash is h if its
// key is still published, and nil otherwise. An entry whose key has left
// the issuer's key set is dropped: the token is then verified anew, and
// fails. Like any use of a known key, a hit starts a background refresh
// when the issuer's keys are due for one.
func (v *Verifier) cached(ctx context.Context, h *tokenHash, now time.Time) *cacheEntry {
	e := v.cache.get(h)
	if e == nil {
		return nil
	}
	is := e.is
	if ks := is.keys.Load(); e.keys.Load() != ks {
		if !ks.publishes(e.kid, e.key) {
			v.cache.remove(h, e)
			return nil
		}
		e.keys.Store(ks)
	}
	if now.UnixNano() >= is.refreshAt.Load() {
		v.refreshInBackground(ctx, is, now)
	}
	return e
}

// admit applies the checks that every request repeats, for a new token or
// one from the cache: the policy and the replay guard.
func (v *Verifier) admit(ctx context.Context, c *Claims, now time.Time) (*Claims, error) {
	if err := v.policy.allow(c); err != nil {
		return nil, err
	}
	if v.replay != nil {
		if c.ID == "" {
			return nil, newError(ErrReplay, "token has no jti; the replay guard needs one", nil)
		}
		fresh, evicted := v.replay.check(c.Issuer, c.ID, c.Expiry.Add(v.leeway), now)
		if evicted {
			v.metrics.evictions.Add(ctx, 1)
		}
		if !fresh {
			return nil, newError(ErrReplay, fmt.Sprintf("jti %q seen before", truncate(c.ID)), nil)
		}
	}
	return c, nil
}

// checkTimes checks exp, iat and nbf (the zero time if absent) against now
// and the lifetime bound.
func (v *Verifier) checkTimes(exp, iat, nbf time.Time, now time.Time) error {
	if now.After(exp.Add(v.leeway)) {
		return newError(ErrExpired, fmt.Sprintf("exp %s is %s ago", exp.UTC().Format(time.RFC3339), now.Sub(exp).Round(time.Second)), nil)
	}
	if iat.After(now.Add(v.leeway)) {
		return newError(ErrNotYetValid, fmt.Sprintf("iat %s is %s ahead", iat.UTC().Format(time.RFC3339), iat.Sub(now).Round(time.Second)), nil)
	}
	if !nbf.IsZero() && nbf.After(now.Add(v.leeway)) {
		return newError(ErrNotYetValid, fmt.Sprintf("nbf %s is %s ahead", nbf.UTC().Format(time.RFC3339), nbf.Sub(now).Round(time.Second)), nil)
	}
	if life := exp.Sub(iat); life <= 0 || life > v.maxLifetime+v.leeway {
		return newError(ErrLifetime, fmt.Sprintf("exp - iat is %s, want more than 0 and at most %s", life, v.maxLifetime), nil)
	}
	return nil
}

// audienceDetail formats token audiences for an error, bounded.
func audienceDetail(aud []string) string {
	if len(aud) > 3 {
		aud = append(aud[:3:3], fmt.Sprintf("and %d more", len(aud)-3))
	}
	out := make([]string, len(aud))
	for i, a := range aud {
		out[i] = truncate(a)
	}
	return fmt.Sprintf("%q", out)
}

// compactJWSChars reports whether s has only base64url characters and
// exactly two dots, so that nothing the base64 decoder would skip (line
// breaks) or the parser would trim (spaces) gets through.
func compactJWSChars(s string) bool {
	dots := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
		case c == '.':
			dots++
		default:
			return false
		}
	}
	return dots == 2
}

// Ready reports whether every issuer's keys have been fetched, so that a
// token signed with a known key verifies without waiting for a fetch. Keys
// once fetched are kept when a later refresh fails, so Ready never turns
// false again. A server's readiness probe can report it; see
// [Verifier.Prime].
func (v *Verifier) Ready() bool {
	for _, is := range v.issuerList {
		if is.keys.Load() == nil {
			return false
		}
	}
	return true
}

// Prime fetches the keys of every issuer that has none yet, in parallel,
// and waits for them, so the first requests do not. Call it at startup. It
// returns the errors of the issuers whose keys could not be fetched, joined;
// a failed issuer is retried on use. ctx bounds the wait, not the fetches.
func (v *Verifier) Prime(ctx context.Context) error {
	now := v.now()
	calls := make([]*fetchCall, len(v.issuerList))
	for i, is := range v.issuerList {
		is.mu.Lock()
		switch {
		case is.inflight != nil:
			calls[i] = is.inflight
		case is.keys.Load() == nil:
			calls[i] = v.startFetchLocked(ctx, is, now)
		}
		is.mu.Unlock()
	}
	var errs []error
	for i, call := range calls {
		if call == nil {
			continue
		}
		select {
		case <-call.done:
			if call.err != nil {
				errs = append(errs, fmt.Errorf("verify: prime %s: %w", v.issuerList[i].url, call.err))
			}
		case <-ctx.Done():
			return errors.Join(append(errs, fmt.Errorf("verify: prime: %w", ctx.Err()))...)
		}
	}
	return errors.Join(errs...)
}
