package verify

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"go.opentelemetry.io/otel/metric"
)

// Paths and limits of key fetching.
const (
	discoveryPath = "/.well-known/openid-configuration"

	// MaxDocumentSize is the largest discovery or JWKS document read, in
	// bytes; larger ones fail the fetch.
	MaxDocumentSize = 256 << 10

	// minRSABits is the smallest RSA modulus accepted in a JWKS.
	minRSABits = 2048
	// maxKeysPerSet bounds the keys read from one JWKS.
	maxKeysPerSet = 100

	// DefaultRefreshInterval is how long fetched keys are used before a
	// background refresh when the JWKS response has no Cache-Control
	// max-age. A max-age is honoured but kept within
	// [MinRefreshInterval, MaxRefreshInterval].
	DefaultRefreshInterval = time.Hour
	// MinRefreshInterval is the shortest time between background refreshes.
	MinRefreshInterval = time.Minute
	// MaxRefreshInterval is the longest time between background refreshes.
	MaxRefreshInterval = 24 * time.Hour

	// firstFetchRetry bounds how long an issuer with no keys at all waits
	// before a failed fetch may be retried (the cooldown if shorter).
	firstFetchRetry = time.Second
)

// verifyKey is one usable public key of an issuer.
type verifyKey struct {
	alg jose.SignatureAlgorithm // RS256 or ES384, from the key type
	key any                     // *rsa.PublicKey or *ecdsa.PublicKey
}

// keySet is an immutable set of an issuer's keys, by kid.
type keySet struct {
	byKID map[string][]verifyKey
}

// issuer is the key cache and fetch state of one trusted issuer.
type issuer struct {
	url      string           // exactly as the iss claim must read
	origin   string           // scheme://host[:port] of url, lowercased
	account  string           // if set, aws_account must equal it
	fetchOK  metric.AddOption // JWKS fetch metric attributes on success
	fetchErr metric.AddOption // and on failure

	keys      atomic.Pointer[keySet] // nil until the first successful fetch
	refreshAt atomic.Int64           // Unix nanoseconds after which keys are refreshed in the background

	mu          sync.Mutex // guards the fields below
	inflight    *fetchCall // the running fetch, if any
	lastAttempt time.Time  // when the last fetch started
	lastErr     error      // the last fetch error, nil after a success
	jwksURI     string     // from discovery; empty until discovered or after a failure
	fetchedOnce bool       // a fetch succeeded before: later ones send no-cache
}

// fetchCall is one shared fetch of an issuer's keys.
type fetchCall struct {
	done chan struct{} // closed when the fetch has finished and its result is stored
	err  error         // set before done is closed
}

// lookup returns the cached key set and its keys for kid, without locking.
func (is *issuer) lookup(kid string) (*keySet, []verifyKey, bool) {
	ks := is.keys.Load()
	if ks == nil {
		return nil, nil, false
	}
	k, ok := ks.byKID[kid]
	return ks, k, ok
}

// key returns the issuer's keys for kid and the key set they are from.
// Known kids are answered from the cache at once; when the cache is due for
// a refresh, one starts in the background. An unknown kid makes the request
// wait for a fetch if one is running or the cooldown since the last one has
// passed, and otherwise fails at once.
//
// There is deliberately no negative cache of kids a fetch did not find:
// AWS's kids are predictable (RSA_0, then RSA_1), so one would let anyone
// who can send a token block the issuer's next key until the entry expired.
// The cooldown alone bounds what unknown kids cost: at most one fetch per
// cooldown per issuer, whichever kids they name.
func (v *Verifier) key(ctx context.Context, is *issuer, kid string, now time.Time) (*keySet, []verifyKey, error) {
	if ks, k, ok := is.lookup(kid); ok {
		if now.UnixNano() >= is.refreshAt.Load() {
			v.refreshInBackground(ctx, is, now)
		}
		return ks, k, nil
	}
	is.mu.Lock()
	// Look again: a fetch may have finished since.
	if ks, k, ok := is.lookup(kid); ok {
		is.mu.Unlock()
		return ks, k, nil
	}
	noKeys := is.keys.Load() == nil
	call := is.inflight
	if call == nil {
		wait := v.cooldown
		if noKeys {
			wait = min(wait, firstFetchRetry)
		}
		if !is.lastAttempt.IsZero() && now.Sub(is.lastAttempt) < wait {
			lastErr := is.lastErr
			is.mu.Unlock()
			if noKeys {
				return nil, nil, newError(ErrKeysUnavailable, "keys of "+is.url+" not fetched yet; retry later", lastErr)
			}
			return nil, nil, newError(ErrUnknownKey, fmt.Sprintf("kid %q not published by %s (refetch allowed every %s)", kid, is.url, v.cooldown), nil)
		}
		call = v.startFetchLocked(ctx, is, now)
	}
	is.mu.Unlock()

	v.waits.Add(1)
	select {
	case <-call.done:
	case <-ctx.Done():
		return nil, nil, newError(ErrKeysUnavailable, "waiting for keys of "+is.url, ctx.Err())
	}
	if ks, k, ok := is.lookup(kid); ok {
		return ks, k, nil
	}
	if call.err != nil {
		// The kid may well be published: it could not be checked.
		return nil, nil, newError(ErrKeysUnavailable, fmt.Sprintf("fetching keys of %s for kid %q", is.url, kid), call.err)
	}
	return nil, nil, newError(ErrUnknownKey, fmt.Sprintf("kid %q not published by %s", kid, is.url), nil)
}

// refreshInBackground starts a fetch if the keys are due for a refresh and
// none is running. It never waits.
func (v *Verifier) refreshInBackground(ctx context.Context, is *issuer, now time.Time) {
	is.mu.Lock()
	defer is.mu.Unlock()
	if is.inflight == nil && now.UnixNano() >= is.refreshAt.Load() {
		v.startFetchLocked(ctx, is, now)
	}
}

// startFetchLocked starts the shared fetch of is's keys and returns it.
// is.mu must be held. The fetch runs detached from ctx's cancellation, under
// its own timeout, so one caller giving up never fails the others.
func (v *Verifier) startFetchLocked(ctx context.Context, is *issuer, now time.Time) *fetchCall {
	call := &fetchCall{done: make(chan struct{})}
	is.inflight = call
	is.lastAttempt = now
	refresh := is.fetchedOnce
	jwksURI := is.jwksURI
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), v.fetchTimeout)
	v.fetching.Add(1)
	go func() {
		defer v.fetching.Done()
		defer cancel()
		ks, uri, maxAge, err := v.fetchKeys(fctx, is, jwksURI, refresh)
		v.metrics.recordFetch(fctx, is, err)
		now := v.now()
		is.mu.Lock()
		if err == nil {
			is.keys.Store(ks)
			is.jwksURI, is.fetchedOnce, is.lastErr = uri, true, nil
			is.refreshAt.Store(now.Add(maxAge).UnixNano())
		} else {
			// Keep the keys we have; rediscover next time; retry after the
			// cooldown.
			is.jwksURI, is.lastErr = "", err
			is.refreshAt.Store(now.Add(v.cooldown).UnixNano())
			v.logger.LogAttrs(fctx, slog.LevelWarn, "verify: fetching issuer keys failed; keeping any keys already cached",
				slog.String("issuer", is.url), slog.String("error", err.Error()))
		}
		call.err = err
		is.inflight = nil
		is.mu.Unlock()
		close(call.done)
	}()
	return call
}

// fetchKeys fetches the issuer's JWKS, discovering its URI first if
// jwksURI is empty. It returns the keys, the JWKS URI and how long to use
// them.
func (v *Verifier) fetchKeys(ctx context.Context, is *issuer, jwksURI string, refresh bool) (*keySet, string, time.Duration, error) {
	if jwksURI == "" {
		var disc struct {
			Issuer  string `json:"issuer"`
			JWKSURI string `json:"jwks_uri"`
		}
		body, _, err := v.get(ctx, is.url+discoveryPath, refresh)
		if err != nil {
			return nil, "", 0, fmt.Errorf("discovery: %w", err)
		}
		if err := json.Unmarshal(body, &disc); err != nil {
			return nil, "", 0, errors.New("discovery: not a JSON object")
		}
		if disc.Issuer != is.url {
			return nil, "", 0, fmt.Errorf("discovery names issuer %q, want %q", truncate(disc.Issuer), is.url)
		}
		u, err := url.Parse(disc.JWKSURI)
		if err != nil || u.User != nil || originOf(u) != is.origin {
			return nil, "", 0, fmt.Errorf("discovery: jwks_uri %q is not on the issuer's origin %s", truncate(disc.JWKSURI), is.origin)
		}
		jwksURI = disc.JWKSURI
	}
	body, header, err := v.get(ctx, jwksURI, refresh)
	if err != nil {
		return nil, "", 0, fmt.Errorf("jwks: %w", err)
	}
	ks, err := parseJWKS(body)
	if err != nil {
		return nil, "", 0, fmt.Errorf("jwks: %w", err)
	}
	return ks, jwksURI, refreshInterval(header.Get("Cache-Control")), nil
}

// get GETs rawURL and returns its body, at most MaxDocumentSize bytes.
// Redirects are not followed (see New). With noCache, the request asks
// caches between here and the issuer for a fresh copy.
func (v *Verifier) get(ctx context.Context, rawURL string, noCache bool) ([]byte, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Accept", "application/json")
	if noCache {
		req.Header.Set("Cache-Control", "no-cache")
	}
	resp, err := v.client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, MaxDocumentSize))
		return nil, nil, fmt.Errorf("GET %s: status %d", rawURL, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxDocumentSize+1))
	if err != nil {
		return nil, nil, fmt.Errorf("GET %s: %w", rawURL, err)
	}
	if len(body) > MaxDocumentSize {
		return nil, nil, fmt.Errorf("GET %s: document larger than %d bytes", rawURL, MaxDocumentSize)
	}
	return body, resp.Header, nil
}

// parseJWKS returns the usable keys of a JWKS document: RSA keys of at
// least 2048 bits for RS256 and P-384 EC keys for ES384, public, with a kid
// and, if they say, use "sig" and the matching alg. Other keys are skipped,
// as RFC 7517 section 5 asks. A document with no usable key is an error.
func parseJWKS(doc []byte) (*keySet, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(doc, &set); err != nil {
		return nil, errors.New("not a JWKS document")
	}
	if len(set.Keys) > maxKeysPerSet {
		return nil, fmt.Errorf("%d keys, more than %d", len(set.Keys), maxKeysPerSet)
	}
	ks := &keySet{byKID: make(map[string][]verifyKey, len(set.Keys))}
	for _, raw := range set.Keys {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(raw); err != nil || k.KeyID == "" || !k.IsPublic() {
			continue
		}
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		var vk verifyKey
		switch pub := k.Key.(type) {
		case *rsa.PublicKey:
			if pub.N.BitLen() < minRSABits {
				continue
			}
			vk = verifyKey{alg: jose.RS256, key: pub}
		case *ecdsa.PublicKey:
			if pub.Curve != elliptic.P384() {
				continue
			}
			vk = verifyKey{alg: jose.ES384, key: pub}
		default:
			continue
		}
		if k.Algorithm != "" && k.Algorithm != string(vk.alg) {
			continue
		}
		ks.byKID[k.KeyID] = append(ks.byKID[k.KeyID], vk)
	}
	if len(ks.byKID) == 0 {
		return nil, errors.New("no usable RS256 or ES384 key")
	}
	return ks, nil
}

// refreshInterval returns how long to use keys fetched with this
// Cache-Control header: its max-age within [MinRefreshInterval,
// MaxRefreshInterval], or DefaultRefreshInterval without one. no-store and
// no-cache mean the minimum.
func refreshInterval(cacheControl string) time.Duration {
	d := DefaultRefreshInterval
	for _, dir := range strings.Split(cacheControl, ",") {
		name, val, _ := strings.Cut(strings.TrimSpace(dir), "=")
		switch strings.ToLower(name) {
		case "no-store", "no-cache":
			return MinRefreshInterval
		case "max-age":
			secs, err := strconv.ParseUint(strings.Trim(val, `"`), 10, 63)
			if err != nil && !errors.Is(err, strconv.ErrRange) {
				continue
			}
			if err != nil || secs > uint64(MaxRefreshInterval/time.Second) {
				d = MaxRefreshInterval
			} else {
				d = time.Duration(secs) * time.Second
			}
		}
	}
	return min(max(d, MinRefreshInterval), MaxRefreshInterval)
}

// originOf returns scheme://host of u, lowercased, with the port only if
// it is not the scheme's default.
func originOf(u *url.URL) string {
	scheme := strings.ToLower(u.Scheme)
	host := strings.ToLower(u.Hostname())
	port := u.Port()
	if (scheme == "https" && port == "443") || (scheme == "http" && port == "80") {
		port = ""
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port != "" {
		host += ":" + port
	}
	return scheme + "://" + host
}

// truncate shortens a value read from the network before it is put in an
// error message.
func truncate(s string) string {
	const max = 100
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
