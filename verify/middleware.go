package verify

import (
	"context"
	"errors"
	"net/http"
	"strings"
)

// claimsKey is the context key of the verified claims.
type claimsKey struct{}

// NewContext returns a copy of ctx carrying c, as [Verifier.Middleware]
// does; it lets tests of handlers supply claims without a token.
func NewContext(ctx context.Context, c *Claims) context.Context {
	return context.WithValue(ctx, claimsKey{}, c)
}

// ClaimsFromContext returns the claims [Verifier.Middleware] verified for
// the request whose context is ctx, and whether there are any.
func ClaimsFromContext(ctx context.Context) (*Claims, bool) {
	c, ok := ctx.Value(claimsKey{}).(*Claims)
	return c, ok && c != nil
}

// Middleware returns a handler that verifies the request's "Authorization:
// Bearer" token and calls next with the claims in the request context (see
// [ClaimsFromContext]).
//
// A request without a bearer token gets 401 with "WWW-Authenticate: Bearer";
// one whose token fails verification gets 401 with "WWW-Authenticate: Bearer
// error=\"invalid_token\", error_description=\"<reason>\"" (RFC 6750), the
// reason being short and fixed per kind of failure, such as "token expired".
// When the issuer's keys cannot be fetched, the fault is the server's: the
// answer is 503. The token is never logged, echoed or passed on in an error.
func (v *Verifier) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, ok := bearerToken(r.Header)
		if !ok {
			v.metrics.recordVerify(r.Context(), newError(ErrNoToken, "", nil))
			w.Header().Set("WWW-Authenticate", `Bearer`)
			http.Error(w, "verify: "+kinds[ErrNoToken].reason, http.StatusUnauthorized)
			return
		}
		c, err := v.Verify(r.Context(), raw)
		if err != nil {
			reason := infoOf(err).reason
			if errors.Is(err, ErrKeysUnavailable) {
				http.Error(w, "verify: "+reason, http.StatusServiceUnavailable)
				return
			}
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token", error_description="`+reason+`"`)
			http.Error(w, "verify: "+reason, http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r.WithContext(NewContext(r.Context(), c)))
	})
}

// bearerToken returns the token of the request's single Authorization
// header if its scheme is Bearer (case-insensitive, RFC 7235).
func bearerToken(h http.Header) (string, bool) {
	vals := h.Values("Authorization")
	if len(vals) != 1 {
		return "", false
	}
	scheme, tok, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimLeft(tok, " ")
	return tok, tok != ""
}
