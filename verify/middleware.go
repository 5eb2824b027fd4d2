package verify

import (
	"context"
	"encoding/json"
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
// the request whose context is ctx, and whether there are any. Their
// slices and maps may be shared with concurrent requests (see [Claims]):
// read them, never modify them.
func ClaimsFromContext(ctx context.Context) (*Claims, bool) {
	c, ok := ctx.Value(claimsKey{}).(*Claims)
	return c, ok && c != nil
}

// Middleware returns a handler that verifies the request's "Authorization:
// Bearer" token ([Verifier.VerifyRequest]) and calls next with the claims in
// the request context (see [ClaimsFromContext]). A request whose token fails
// is answered by [WriteError] and never reaches next. The token is never
// logged, echoed or passed on in an error.
func (v *Verifier) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := v.VerifyRequest(r)
		if err != nil {
			WriteError(w, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(NewContext(r.Context(), c)))
	})
}

// VerifyRequest verifies the token of r's "Authorization: Bearer" header
// with [Verifier.Verify] under r's context. The request must carry exactly
// one Authorization header, of scheme Bearer (in any case, RFC 7235); if it
// does not, the error matches [ErrNoToken]. It is for servers that answer a
// refusal themselves, such as a proxy; [WriteError] answers as
// [Verifier.Middleware] does.
func (v *Verifier) VerifyRequest(r *http.Request) (*Claims, error) {
	raw, ok := bearerToken(r.Header)
	if !ok {
		err := newError(ErrNoToken, "", nil)
		v.metrics.recordVerify(r.Context(), err)
		return nil, err
	}
	return v.Verify(r.Context(), raw)
}

// Reason returns the reason class of err, a short fixed word for metrics,
// logs and responses: "no_token", "malformed", "algorithm",
// "untrusted_issuer", "unknown_key", "keys_unavailable", "bad_signature",
// "expired", "not_yet_valid", "lifetime", "audience", "account", "policy" or
// "replay"; "error" for an error this package did not make, and "" for nil.
// It never holds the token or any claim.
func Reason(err error) string {
	if err == nil {
		return ""
	}
	return infoOf(err).result
}

// errorBody is the JSON body of [WriteError].
type errorBody struct {
	Error       string `json:"error,omitempty"`
	Reason      string `json:"reason"`
	Description string `json:"error_description"`
}

// WriteError answers a request that err refused, as RFC 6750 asks:
//
//   - no bearer token ([ErrNoToken]): 401 with "WWW-Authenticate: Bearer";
//   - a token refused by [Config.Policy] ([ErrPolicy]): 403 with
//     "WWW-Authenticate: Bearer error=\"insufficient_scope\",
//     error_description=\"denied by policy\"";
//   - the issuer's keys could not be fetched ([ErrKeysUnavailable]): 503, the
//     server's fault and not the token's;
//   - any other failure: 401 with "WWW-Authenticate: Bearer
//     error=\"invalid_token\", error_description=\"<reason>\"".
//
// The body is a JSON object, such as {"error":"invalid_token",
// "reason":"expired","error_description":"token expired"}: error is the RFC
// 6750 code (absent without a token or for a 503), reason is [Reason] and
// error_description a short fixed text per reason. Neither holds the token
// or a claim.
func WriteError(w http.ResponseWriter, err error) {
	info := infoOf(err)
	body := errorBody{Reason: info.result, Description: info.reason}
	status := http.StatusUnauthorized
	switch {
	case errors.Is(err, ErrNoToken):
		w.Header().Set("WWW-Authenticate", `Bearer`)
	case errors.Is(err, ErrKeysUnavailable):
		status = http.StatusServiceUnavailable
	case errors.Is(err, ErrPolicy):
		status, body.Error = http.StatusForbidden, "insufficient_scope"
	default:
		body.Error = "invalid_token"
	}
	if body.Error != "" {
		w.Header().Set("WWW-Authenticate", `Bearer error="`+body.Error+`", error_description="`+info.reason+`"`)
	}
	b, _ := json.Marshal(body) // fixed strings: cannot fail
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
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
