package stsauth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// DefaultHeader is the request header a [Transport] sets when its Header
// field is empty.
const DefaultHeader = "Authorization"

// TokenPlaceholder stands for the JWT in a header value format
// ([Transport.Format]).
const TokenPlaceholder = "{token}"

// DefaultFormat is the header value format a [Transport] uses when its
// Format field is empty: "Bearer <jwt>".
const DefaultFormat = "Bearer " + TokenPlaceholder

// ErrBadFormat is wrapped by the error of [CheckFormat], and so of a
// [Transport] whose Format is invalid.
var ErrBadFormat = errors.New("bad header value format")

// CheckFormat reports whether format is a valid header value format: it
// holds [TokenPlaceholder] exactly once and no control character (CR and LF
// in particular, which would split the header), though it may hold
// tabs. The error wraps [ErrBadFormat] and never holds a token.
func CheckFormat(format string) error {
	if n := strings.Count(format, TokenPlaceholder); n != 1 {
		return fmt.Errorf("stsauth: %w: want %s exactly once, found it %d times", ErrBadFormat, TokenPlaceholder, n)
	}
	for i := 0; i < len(format); i++ {
		if c := format[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return fmt.Errorf("stsauth: %w: want no control characters (CR, LF), found %q at byte %d", ErrBadFormat, c, i)
		}
	}
	return nil
}

// Transport is an [http.RoundTripper] that puts a web identity token on each
// request as "Authorization: Bearer <jwt>" (or the Header and Format it is
// given), replacing any value the request had, then sends it with Base.
//
// Tokens go only where they belong. Transport refuses, without sending, a
// request to a host outside AllowedHosts (when set), to a link-local or
// instance-metadata address ([IsMetadataHost]), to a host that is not
// ASCII (net/http would map it with IDNA, so write it in punycode), or, with
// RequireTLS, over plain http to a host that is not a loopback address
// ([IsLoopbackHost]).
//
// When [http.Client] follows a redirect, the token goes with it only within
// the origin (scheme, host and port, a missing port being the scheme's
// default) of the original request. A redirect that changes any of them is
// followed without the token, unless AllowedHosts is set and holds the new
// host (requests to hosts it does not hold are refused) and the redirect
// chain has not gone from https to http: a downgrade never carries the
// token, whatever AllowedHosts says. The chain is traced through each
// response's Request, which [http.Transport] sets; if a Base leaves it
// unset, redirects are followed without the token.
//
// A Transport is safe for concurrent use. Its fields must not change once it
// is in use.
type Transport struct {
	// Source mints and caches the tokens. It is required.
	Source *TokenSource
	// Audience chooses each request's audience set. If nil,
	// [HostAudience] derives it from the request's URL.
	Audience AudienceResolver
	// Base is the RoundTripper that sends requests. If nil, a clone of
	// [http.DefaultTransport] guarded by [GuardDialControl] and
	// [GuardProxy] is used, one shared by every Transport (see
	// [NewGuardedTransport]). A Base of your own should have the same
	// guards.
	Base http.RoundTripper
	// Header is the request header that carries the token, for APIs that
	// read it from elsewhere than Authorization. If empty, [DefaultHeader]
	// is used.
	Header string
	// Format is the Header's value, with [TokenPlaceholder] standing for
	// the JWT, for APIs that want a prefix or suffix of their own, such as
	// "Bearer tenant-a:{token}". It must pass [CheckFormat]; if it does
	// not, every request fails with an error wrapping [ErrBadFormat],
	// before any token is fetched. If empty, [DefaultFormat] is used.
	Format string
	// AllowedHosts, if non-nil, are the only hosts requests may be sent
	// to. If nil, every host but metadata addresses is allowed.
	AllowedHosts *AllowedHosts
	// RequireTLS, if true, refuses a request over plain http, with an
	// error wrapping [ErrCleartext], unless its host is a loopback address
	// ([IsLoopbackHost]): a token then never crosses a network in clear
	// text. If false, the default, plain http is allowed.
	RequireTLS bool
}

// ErrCleartext is wrapped by the error of a request that would carry a token
// in clear text where that is refused: over plain http with
// [Transport.RequireTLS], or through a forward proxy ([GuardProxy]).
var ErrCleartext = errors.New("token would travel in clear text")

var _ http.RoundTripper = (*Transport)(nil)

// RoundTrip attaches a token to a copy of req and sends the copy with Base.
// It never modifies req. If the host is refused, the audience cannot be
// resolved or no token can be had, it closes req's body and returns the
// error without sending anything; a token failure wraps a *[TokenError].
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	attach, err := t.hostAllowed(req)
	if err != nil {
		return nil, closeBody(req, err)
	}
	if !t.defaultFormat() {
		if err := CheckFormat(t.Format); err != nil {
			return nil, closeBody(req, fmt.Errorf("stsauth: Transport.Format: %w", err))
		}
	}
	name := t.Header
	if name == "" {
		name = DefaultHeader
	} else {
		name = http.CanonicalHeaderKey(name)
	}
	var bearer string
	var sent Token
	if attach {
		resolver := t.Audience
		if resolver == nil {
			resolver = HostAudience{}
		}
		aud, err := resolver.ResolveAudience(req)
		if err != nil {
			return nil, closeBody(req, err)
		}
		if t.Source == nil {
			return nil, closeBody(req, errors.New("stsauth: Transport has no Source"))
		}
		tok, err := t.Source.Token(req.Context(), aud)
		if err != nil {
			return nil, closeBody(req, err)
		}
		bearer = t.headerValue(tok)
		sent = tok
	}
	out := new(http.Request)
	*out = *req
	out.Header = cloneHeaderWith(req.Header, name, bearer)
	return t.sendRetrying(req, out, name, sent)
}

// defaultFormat reports whether the header value is "Bearer <jwt>", which
// each token holds ready, so no request pays for building it.
func (t *Transport) defaultFormat() bool {
	return t.Format == "" || t.Format == DefaultFormat
}

// headerValue returns the header value carrying tok under t.Format, which
// has passed [CheckFormat].
func (t *Transport) headerValue(tok Token) string {
	if t.defaultFormat() {
		return tok.bearerValue()
	}
	before, after, _ := strings.Cut(t.Format, TokenPlaceholder)
	return before + tok.Value() + after
}

// hostAllowed decides whether req may be sent and whether it may carry a
// token. A refused request is an error; a redirect that leaves the original
// origin is sent without a token unless the allowlist holds the new host and
// the chain has not been downgraded from https to http.
func (t *Transport) hostAllowed(req *http.Request) (attach bool, err error) {
	if req.URL == nil {
		return false, errors.New("stsauth: request has no URL")
	}
	host, _, err := SplitHostPort(req.URL.Host)
	if err != nil || host == "" {
		return false, fmt.Errorf("stsauth: %w: bad host %q", ErrHostNotAllowed, req.URL.Host)
	}
	if !isASCII(host) {
		// net/http maps such a host with IDNA before dialling, so
		// "１６９.２５４.１６９.２５４" would reach 169.254.169.254 past every
		// check here.
		return false, fmt.Errorf("stsauth: %w: host is not ASCII; write it in its punycode (xn--) form", ErrHostNotAllowed)
	}
	if IsMetadataHost(host) {
		return false, fmt.Errorf("stsauth: %w: %s is a link-local or instance metadata address", ErrHostNotAllowed, host)
	}
	if t.RequireTLS && !isHTTPS(req.URL.Scheme) && !IsLoopbackHost(host) {
		return false, fmt.Errorf("stsauth: %w: plain http to %s, which is not a loopback address, with RequireTLS", ErrCleartext, host)
	}
	if t.AllowedHosts != nil && !t.AllowedHosts.AllowsURLHost(req.URL.Scheme, req.URL.Host) {
		return false, fmt.Errorf("stsauth: %w: %s is not in the allowed hosts", ErrHostNotAllowed, req.URL.Host)
	}
	if req.Response != nil {
		return t.redirectKeepsToken(req), nil
	}
	return true, nil
}

// redirectKeepsToken reports whether a redirected request, whose host the
// allowlist (if any) admits, may carry the token: never after a downgrade
// from https to http anywhere in the chain; within the original request's
// origin always; elsewhere only if AllowedHosts is set. A chain it cannot
// walk back to its first request (a base RoundTripper that left a
// Response.Request unset) may have left the origin or been downgraded, so
// it carries no token.
func (t *Transport) redirectKeepsToken(req *http.Request) bool {
	secure := isHTTPS(req.URL.Scheme)
	first := req
	for first.Response != nil {
		first = first.Response.Request
		if first == nil || first.URL == nil {
			return false
		}
		if !secure && isHTTPS(first.URL.Scheme) {
			return false
		}
	}
	if sameOrigin(first.URL, req.URL) {
		return true
	}
	return t.AllowedHosts != nil
}

// sameOrigin reports whether a and b have the same scheme, host and port,
// ignoring case and taking a missing port as the scheme's default.
func sameOrigin(a, b *url.URL) bool {
	if !strings.EqualFold(a.Scheme, b.Scheme) {
		return false
	}
	ha, pa, errA := SplitHostPort(a.Host)
	hb, pb, errB := SplitHostPort(b.Host)
	if errA != nil || errB != nil || !strings.EqualFold(ha, hb) {
		return false
	}
	scheme := strings.ToLower(a.Scheme)
	if pa == "" {
		pa = defaultPort(scheme)
	}
	if pb == "" {
		pb = defaultPort(scheme)
	}
	return pa == pb
}

// isASCII reports whether s holds only ASCII bytes.
func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// isHTTPS reports whether a URL scheme encrypts the connection.
func isHTTPS(scheme string) bool {
	return strings.EqualFold(scheme, "https")
}

// Prime fetches the token for a fixed audience now, so a service can gate
// its readiness on holding one. It fails if Audience is not a
// [FixedAudience] (as [StaticAudience] returns) or no token can be had.
func (t *Transport) Prime(ctx context.Context) error {
	fixed, ok := t.Audience.(FixedAudience)
	if !ok {
		return errors.New("stsauth: Prime needs a Transport with a FixedAudience")
	}
	if t.Source == nil {
		return errors.New("stsauth: Transport has no Source")
	}
	_, err := t.Source.Token(ctx, Audience(fixed))
	return err
}

func (t *Transport) base() http.RoundTripper {
	if t.Base != nil {
		return t.Base
	}
	return defaultBase()
}

// closeBody closes req's body, as the RoundTripper contract requires even
// on errors, and returns err.
func closeBody(req *http.Request, err error) error {
	if req.Body != nil {
		req.Body.Close()
	}
	return err
}

// cloneHeaderWith returns a copy of h in which name (canonical) holds only
// value, or is absent if value is empty. It makes two allocations, the map
// and one backing array for every value, like [http.Header.Clone].
func cloneHeaderWith(h http.Header, name, value string) http.Header {
	n := 0
	for k, vv := range h {
		if !sameKey(k, name) {
			n += len(vv)
		}
	}
	if value != "" {
		n++
	}
	sv := make([]string, n)
	out := make(http.Header, len(h)+1)
	for k, vv := range h {
		if sameKey(k, name) {
			continue // replaced, never merged, even if set with another case
		}
		if vv == nil {
			out[k] = nil
			continue
		}
		m := copy(sv, vv)
		out[k] = sv[:m:m]
		sv = sv[m:]
	}
	if value != "" {
		sv[0] = value
		out[name] = sv[:1:1]
	}
	return out
}

// sameKey reports whether header key k is name, ignoring case: a caller may
// have set the map directly with a non-canonical key.
func sameKey(k, name string) bool {
	return len(k) == len(name) && (k == name || strings.EqualFold(k, name))
}
