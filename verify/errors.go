package verify

import (
	"errors"
	"strings"
)

// Sentinel errors: every error [Verifier.Verify] returns matches exactly one
// of them with [errors.Is], so a caller can tell the reasons apart. None of
// them, and no error of this package, ever holds the token.
var (
	// ErrMalformed: the token is not a compact JWS with a JSON claims set of
	// the expected shape, or it is larger than [MaxTokenSize].
	ErrMalformed = errors.New("verify: malformed token")
	// ErrAlgorithm: the header's alg is not RS256 or ES384, or it does not
	// match the type of the key its kid names.
	ErrAlgorithm = errors.New("verify: unsupported signing algorithm")
	// ErrUntrustedIssuer: the iss claim is not one of [Config.Issuers].
	ErrUntrustedIssuer = errors.New("verify: untrusted issuer")
	// ErrUnknownKey: the issuer publishes no key with the token's kid.
	ErrUnknownKey = errors.New("verify: unknown signing key")
	// ErrKeysUnavailable: the issuer's keys could not be fetched, or the
	// caller's context ended while waiting for them. This is the verifier's
	// problem, not the token's.
	ErrKeysUnavailable = errors.New("verify: issuer keys unavailable")
	// ErrSignature: the signature does not verify with the issuer's key.
	ErrSignature = errors.New("verify: bad signature")
	// ErrExpired: exp is in the past, beyond the leeway.
	ErrExpired = errors.New("verify: token expired")
	// ErrNotYetValid: iat (or nbf) is in the future, beyond the leeway.
	ErrNotYetValid = errors.New("verify: token not yet valid")
	// ErrLifetime: exp - iat exceeds [Config.MaxLifetime] plus the leeway, or
	// exp is not after iat.
	ErrLifetime = errors.New("verify: token lifetime out of range")
	// ErrAudience: no aud value is one of [Config.Audiences].
	ErrAudience = errors.New("verify: wrong audience")
	// ErrAccount: the aws_account claim does not match the account the
	// issuer is bound to ([Issuer.Account]).
	ErrAccount = errors.New("verify: account does not match issuer")
	// ErrPolicy: the claims are valid but [Config.Policy] refuses them.
	ErrPolicy = errors.New("verify: denied by policy")
	// ErrReplay: the token's jti was seen before (see
	// [Config.ReplayCacheSize]).
	ErrReplay = errors.New("verify: token replayed")
	// ErrNoToken: the request has no "Authorization: Bearer" token. Only
	// [Verifier.Middleware] reports it.
	ErrNoToken = errors.New("verify: no bearer token")
)

// Error is the error type [Verifier.Verify] returns. Kind is one of the
// package's sentinel errors; [errors.Is] matches it and, when set, Err.
type Error struct {
	// Kind is the sentinel error naming the reason, such as [ErrExpired].
	Kind error
	// Detail says more, for logs: which claim, which values. It never holds
	// the token or its signature.
	Detail string
	// Err is the underlying cause, if any, such as a fetch error or
	// [context.Canceled].
	Err error
}

// Error returns "<kind>: <detail>: <cause>", leaving out empty parts.
func (e *Error) Error() string {
	var b strings.Builder
	if e.Kind == nil {
		b.WriteString("verify: invalid token")
	} else {
		b.WriteString(e.Kind.Error())
	}
	if e.Detail != "" {
		b.WriteString(": ")
		b.WriteString(e.Detail)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns Kind and Err, those that are set.
func (e *Error) Unwrap() []error {
	errs := make([]error, 0, 2)
	for _, err := range []error{e.Kind, e.Err} {
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// newError returns an *Error.
func newError(kind error, detail string, cause error) *Error {
	return &Error{Kind: kind, Detail: detail, Err: cause}
}

// kindInfo is what the middleware and the metrics say about each kind: a
// metric result value and a short reason for a 401 response.
type kindInfo struct {
	result string
	reason string
}

// kinds maps each sentinel to its result label and reason.
var kinds = map[error]kindInfo{
	ErrMalformed:       {"malformed", "malformed token"},
	ErrAlgorithm:       {"algorithm", "unsupported signing algorithm"},
	ErrUntrustedIssuer: {"untrusted_issuer", "untrusted issuer"},
	ErrUnknownKey:      {"unknown_key", "unknown signing key"},
	ErrKeysUnavailable: {"keys_unavailable", "issuer keys unavailable"},
	ErrSignature:       {"bad_signature", "bad signature"},
	ErrExpired:         {"expired", "token expired"},
	ErrNotYetValid:     {"not_yet_valid", "token not yet valid"},
	ErrLifetime:        {"lifetime", "token lifetime out of range"},
	ErrAudience:        {"audience", "wrong audience"},
	ErrAccount:         {"account", "account does not match issuer"},
	ErrPolicy:          {"policy", "denied by policy"},
	ErrReplay:          {"replay", "token replayed"},
	ErrNoToken:         {"no_token", "no bearer token"},
}

// infoOf returns the kindInfo of err, or that of "error" for an error this
// package did not make.
func infoOf(err error) kindInfo {
	var e *Error
	if errors.As(err, &e) {
		if k, ok := kinds[e.Kind]; ok {
			return k
		}
	}
	return kindInfo{"error", "invalid token"}
}
