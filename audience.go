package stsauth

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits that STS GetWebIdentityToken places on audiences.
const (
	// MaxAudiences is the largest number of values in one audience set.
	MaxAudiences = 10
	// MaxAudienceLength is the longest audience value, in characters.
	MaxAudienceLength = 1000
)

// ErrInvalidAudience is wrapped by every error that reports a bad audience
// value or set, so callers can tell bad input from an STS failure with
// [errors.Is].
var ErrInvalidAudience = errors.New("invalid audience")

// An Audience is a canonical, validated set of 1 to [MaxAudiences] audience
// values: trimmed, sorted and de-duplicated. Two Audiences made from the same
// values in any order are equal (==), so an Audience is a cache key.
//
// The zero Audience is empty and invalid; make one with [NewAudience].
type Audience struct {
	// key holds the sorted values joined by single spaces. Values never
	// contain white space, so the join is reversible and collision-free:
	// ["a,b"] and ["a", "b"] give "a,b" and "a b".
	key string
	n   int
}

// NewAudience returns the canonical audience set of values. Each value is
// trimmed of surrounding white space; duplicates collapse into one. It fails,
// naming the bad value, if a value is empty, longer than
// [MaxAudienceLength] characters, or contains white space or control
// characters, or if the set has no value or more than [MaxAudiences].
func NewAudience(values ...string) (Audience, error) {
	if len(values) == 0 {
		return Audience{}, fmt.Errorf("stsauth: %w: no audience given, want 1 to %d values", ErrInvalidAudience, MaxAudiences)
	}
	clean := make([]string, 0, len(values))
	for _, v := range values {
		v = strings.TrimSpace(v)
		if err := checkAudienceValue(v); err != nil {
			return Audience{}, err
		}
		clean = append(clean, v)
	}
	slices.Sort(clean)
	clean = slices.Compact(clean)
	if len(clean) > MaxAudiences {
		return Audience{}, fmt.Errorf("stsauth: %w: %d distinct values, want 1 to %d", ErrInvalidAudience, len(clean), MaxAudiences)
	}
	if len(clean) == 1 {
		return Audience{key: clean[0], n: 1}, nil
	}
	return Audience{key: strings.Join(clean, " "), n: len(clean)}, nil
}

// MustAudience is like [NewAudience] but panics if the values are invalid.
// It is meant for package-level values and tests, where the audience is a
// constant.
func MustAudience(values ...string) Audience {
	a, err := NewAudience(values...)
	if err != nil {
		panic(err)
	}
	return a
}

func checkAudienceValue(v string) error {
	if v == "" {
		return fmt.Errorf("stsauth: %w: empty value", ErrInvalidAudience)
	}
	if n := utf8.RuneCountInString(v); n > MaxAudienceLength {
		return fmt.Errorf("stsauth: %w: value of %d characters, want 1 to %d", ErrInvalidAudience, n, MaxAudienceLength)
	}
	if !utf8.ValidString(v) {
		return fmt.Errorf("stsauth: %w: %q is not valid UTF-8", ErrInvalidAudience, v)
	}
	for _, r := range v {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return fmt.Errorf("stsauth: %w: %q contains white space or a control character", ErrInvalidAudience, v)
		}
	}
	return nil
}

// Values returns the audience values in canonical (sorted) order. The slice
// is the caller's to keep.
func (a Audience) Values() []string {
	if a.n == 0 {
		return nil
	}
	return strings.Split(a.key, " ")
}

// Len returns the number of values in the set; 0 for the zero Audience.
func (a Audience) Len() int { return a.n }

// IsZero reports whether a is the zero (empty, invalid) Audience.
func (a Audience) IsZero() bool { return a.n == 0 }

// String returns the values in canonical order, space-separated and in
// brackets, for logs and errors: "[https://a.example https://b.example]".
func (a Audience) String() string { return "[" + a.key + "]" }

// An AudienceResolver chooses the audience set for an outgoing request.
// [Transport] calls it once per request, so it must be safe for concurrent
// use and fast; an error refuses the request.
type AudienceResolver interface {
	ResolveAudience(req *http.Request) (Audience, error)
}

// StaticAudience returns a resolver that uses the same audience set for every
// request. It panics if the values are invalid, like [MustAudience]; use
// [NewAudience] and [FixedAudience] to handle the error instead.
func StaticAudience(values ...string) FixedAudience {
	return FixedAudience(MustAudience(values...))
}

// FixedAudience is an [AudienceResolver] that resolves every request to one
// audience set.
type FixedAudience Audience

// ResolveAudience returns the fixed audience set.
func (f FixedAudience) ResolveAudience(*http.Request) (Audience, error) {
	if Audience(f).IsZero() {
		return Audience{}, fmt.Errorf("stsauth: %w: zero FixedAudience", ErrInvalidAudience)
	}
	return Audience(f), nil
}

// AudienceFunc adapts an ordinary function to an [AudienceResolver], for
// custom rules such as a lookup table keyed by host.
type AudienceFunc func(req *http.Request) (Audience, error)

// ResolveAudience calls f(req).
func (f AudienceFunc) ResolveAudience(req *http.Request) (Audience, error) { return f(req) }

// HostAudience is an [AudienceResolver] that derives the audience from the
// request's URL: "<scheme>://<host>", lower-cased, with the port removed and
// IPv6 brackets kept ("https://[2001:db8::1]"). It suits APIs that expect
// their own origin as the audience.
//
// Every distinct host makes a distinct audience set, and so a distinct cached
// token and STS call; pair it with an allowlist ([Transport.AllowedHosts]).
type HostAudience struct{}

// ResolveAudience returns the request's origin as a one-value audience set.
func (HostAudience) ResolveAudience(req *http.Request) (Audience, error) {
	return OriginAudience(req.URL.Scheme, req.URL.Host)
}

// OriginAudience returns the one-value audience "<scheme>://<host>" for a URL
// scheme and host (a host may carry a port, which is dropped), lower-cased.
func OriginAudience(scheme, host string) (Audience, error) {
	if scheme == "" || host == "" {
		return Audience{}, fmt.Errorf("stsauth: %w: cannot derive an audience from scheme %q and host %q", ErrInvalidAudience, scheme, host)
	}
	h, _, err := SplitHostPort(host)
	if err != nil || h == "" {
		return Audience{}, fmt.Errorf("stsauth: %w: cannot derive an audience from host %q", ErrInvalidAudience, host)
	}
	if strings.Contains(h, ":") { // IPv6 literal: keep the brackets in the origin.
		h = "[" + h + "]"
	}
	return NewAudience(strings.ToLower(scheme) + "://" + strings.ToLower(h))
}
