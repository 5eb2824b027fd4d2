package verify

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stsauth/stsauth/ststest"
)

func TestMiddleware(t *testing.T) {
	t.Parallel()
	clock := newClock()
	s := startSTS(t, clock, nil)
	other := startSTS(t, clock, func(s *ststest.Server) { s.AccountID = "111111111111" })
	down := newTestIssuer(t)
	down.set(func(ti *testIssuer) { ti.status = http.StatusInternalServerError })
	v := newTestVerifier(t, clock, Config{
		Issuers:   []Issuer{{URL: s.URL}, {URL: down.URL}, {URL: other.URL}},
		Audiences: []string{aud},
		Policy:    Policy{Accounts: []string{"123456789012"}},
	})
	reached := 0
	h := v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached++
		c, ok := ClaimsFromContext(r.Context())
		if !ok {
			http.Error(w, "no claims", http.StatusInternalServerError)
			return
		}
		_, _ = io.WriteString(w, "hello "+c.AWS.Account)
	}))
	good := mint(t, s, "RS256", aud)
	wrongAud := mint(t, s, "RS256", "https://other.example.com")
	refused := mint(t, other, "RS256", aud)
	const noToken = `{"reason":"no_token","error_description":"no bearer token"}` + "\n"
	tests := []struct {
		name       string
		auth       []string
		wantStatus int
		wantAuthn  string
		wantBody   string
	}{
		{"valid", []string{"Bearer " + good}, http.StatusOK, "", "hello 123456789012"},
		{"scheme is case-insensitive", []string{"bearer " + good}, http.StatusOK, "", "hello 123456789012"},
		{"no header", nil, http.StatusUnauthorized, `Bearer`, noToken},
		{"basic", []string{"Basic dXNlcjpwYXNz"}, http.StatusUnauthorized, `Bearer`, noToken},
		{"empty bearer", []string{"Bearer "}, http.StatusUnauthorized, `Bearer`, noToken},
		{"two headers", []string{"Bearer " + good, "Bearer " + good}, http.StatusUnauthorized, `Bearer`, noToken},
		{"wrong audience", []string{"Bearer " + wrongAud}, http.StatusUnauthorized, `Bearer error="invalid_token", error_description="wrong audience"`,
			`{"error":"invalid_token","reason":"audience","error_description":"wrong audience"}` + "\n"},
		{"garbage", []string{"Bearer not-a-jwt"}, http.StatusUnauthorized, `Bearer error="invalid_token", error_description="malformed token"`,
			`{"error":"invalid_token","reason":"malformed","error_description":"malformed token"}` + "\n"},
		{"policy", []string{"Bearer " + refused}, http.StatusForbidden, `Bearer error="insufficient_scope", error_description="denied by policy"`,
			`{"error":"insufficient_scope","reason":"policy","error_description":"denied by policy"}` + "\n"},
		{"keys unavailable", []string{"Bearer " + sign(t, down.keys.rsa, "RS256", "rsa-1", claimsFor(down.URL, clock.Now(), aud), nil)}, http.StatusServiceUnavailable, "",
			`{"reason":"keys_unavailable","error_description":"issuer keys unavailable"}` + "\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reached = 0
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
			if tc.wantStatus != http.StatusOK {
				assert.Equal(t, 0, reached, "a refused request never reaches the handler")
				assert.Equal(t, "application/json", w.Header().Get("Content-Type"))
				assert.Equal(t, "no-store", w.Header().Get("Cache-Control"))
			}
		})
	}
}

func TestReason(t *testing.T) {
	t.Parallel()
	assert.Equal(t, "", Reason(nil))
	assert.Equal(t, "expired", Reason(newError(ErrExpired, "exp", nil)))
	assert.Equal(t, "policy", Reason(fmt.Errorf("wrapped: %w", newError(ErrPolicy, "", nil))))
	assert.Equal(t, "error", Reason(errors.New("other")))
	for kind, info := range kinds {
		assert.Equal(t, info.result, Reason(newError(kind, "", nil)), kind.Error())
	}
}

// TestReadyAndNow: Ready turns true once every issuer's keys are in, and
// Config.Now is the clock the checks use.
func TestReadyAndNow(t *testing.T) {
	t.Parallel()
	clock := newClock()
	a := startSTS(t, clock, nil)
	b := startSTS(t, clock, nil)
	v, err := New(Config{
		Issuers:                      []Issuer{{URL: a.URL}, {URL: b.URL}},
		Audiences:                    []string{aud},
		AllowInsecureLoopbackIssuers: true,
		Logger:                       slog.New(slog.NewTextHandler(io.Discard, nil)),
		Now:                          clock.Now,
	})
	require.NoError(t, err)
	t.Cleanup(v.fetching.Wait)
	assert.False(t, v.Ready())
	_, err = v.Verify(t.Context(), mint(t, a, "RS256", aud))
	require.NoError(t, err, "a token minted on the shared fake clock verifies")
	assert.False(t, v.Ready(), "one issuer's keys are still missing")
	require.NoError(t, v.Prime(t.Context()))
	assert.True(t, v.Ready())
	b.SetJWKSStatus(http.StatusServiceUnavailable)
	clock.Advance(2 * time.Hour)
	_, err = v.Verify(t.Context(), mint(t, b, "RS256", aud))
	require.NoError(t, err, "known keys keep working while the refresh fails")
	v.fetching.Wait()
	assert.True(t, v.Ready(), "a failed refresh keeps the keys")
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
