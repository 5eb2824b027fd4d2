package verify

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMiddleware(t *testing.T) {
	t.Parallel()
	clock := newClock()
	s := startSTS(t, clock, nil)
	down := newTestIssuer(t)
	down.set(func(ti *testIssuer) { ti.status = http.StatusInternalServerError })
	v := newTestVerifier(t, clock, Config{Issuers: []Issuer{{URL: s.URL}, {URL: down.URL}}, Audiences: []string{aud}})
	h := v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, ok := ClaimsFromContext(r.Context())
		if !ok {
			http.Error(w, "no claims", http.StatusInternalServerError)
			return
		}
		_, _ = io.WriteString(w, "hello "+c.AWS.Account)
	}))
	good := mint(t, s, "RS256", aud)
	wrongAud := mint(t, s, "RS256", "https://other.example.com")
	tests := []struct {
		name       string
		auth       []string
		wantStatus int
		wantAuthn  string
		wantBody   string
	}{
		{"valid", []string{"Bearer " + good}, http.StatusOK, "", "hello 123456789012"},
		{"scheme is case-insensitive", []string{"bearer " + good}, http.StatusOK, "", "hello 123456789012"},
		{"no header", nil, http.StatusUnauthorized, `Bearer`, "verify: no bearer token\n"},
		{"basic", []string{"Basic dXNlcjpwYXNz"}, http.StatusUnauthorized, `Bearer`, "verify: no bearer token\n"},
		{"empty bearer", []string{"Bearer "}, http.StatusUnauthorized, `Bearer`, "verify: no bearer token\n"},
		{"two headers", []string{"Bearer " + good, "Bearer " + good}, http.StatusUnauthorized, `Bearer`, "verify: no bearer token\n"},
		{"wrong audience", []string{"Bearer " + wrongAud}, http.StatusUnauthorized, `Bearer error="invalid_token", error_description="wrong audience"`, "verify: wrong audience\n"},
		{"garbage", []string{"Bearer not-a-jwt"}, http.StatusUnauthorized, `Bearer error="invalid_token", error_description="malformed token"`, "verify: malformed token\n"},
		{"keys unavailable", []string{"Bearer " + sign(t, down.keys.rsa, "RS256", "rsa-1", claimsFor(down.URL, clock.Now(), aud), nil)}, http.StatusServiceUnavailable, "", "verify: issuer keys unavailable\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			for _, a := range tc.auth {
				r.Header.Add("Authorization", a)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			assert.Equal(t, tc.wantStatus, w.Code)
			assert.Equal(t, tc.wantAuthn, w.Header().Get("WWW-Authenticate"))
			assert.Equal(t, tc.wantBody, w.Body.String())
			assert.NotContains(t, w.Body.String(), good[:40], "the token is never echoed")
		})
	}
}

func TestClaimsFromContext(t *testing.T) {
	t.Parallel()
	_, ok := ClaimsFromContext(t.Context())
	assert.False(t, ok)
	want := &Claims{Subject: "s"}
	got, ok := ClaimsFromContext(NewContext(t.Context(), want))
	require.True(t, ok)
	assert.Same(t, want, got)
	_, ok = ClaimsFromContext(NewContext(t.Context(), nil))
	assert.False(t, ok)
}
