package stsauth

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCheckFormat(t *testing.T) {
	t.Parallel()
	for _, f := range []string{DefaultFormat, "{token}", "Bearer tenant-a:{token}", "Token {token}; v=1", "Bearer\t{token}", "Bearer {token} é"} {
		assert.NoError(t, CheckFormat(f), "CheckFormat(%q)", f)
	}
	for _, tc := range []struct{ format, want string }{
		{"", "found it 0 times"},
		{"Bearer token", "found it 0 times"},
		{"Bearer {TOKEN}", "found it 0 times"},
		{"{token}:{token}", "found it 2 times"},
		{"Bearer {token}\r\nX-Evil: 1", `found '\r' at byte 14`},
		{"Bearer {token}\n", `found '\n'`},
		{"Bearer\x00{token}", `found '\x00'`},
		{"Bearer {token}\x7f", `found '\x7f'`},
	} {
		err := CheckFormat(tc.format)
		if assert.ErrorIs(t, err, ErrBadFormat, "CheckFormat(%q)", tc.format) {
			assert.Contains(t, err.Error(), tc.want, "CheckFormat(%q)", tc.format)
			assert.True(t, strings.HasPrefix(err.Error(), "stsauth: "), err.Error())
		}
	}
}

func TestTransportFormat(t *testing.T) {
	ts, _, _ := newTestSource(t)
	tok, err := ts.Token(context.Background(), apiAudience)
	require.NoError(t, err)
	for _, tc := range []struct {
		name, header, format string
		wantHeader, want     string
	}{
		{"defaults", "", "", "Authorization", "Bearer " + tok.Value()},
		{"default format spelled out", "", DefaultFormat, "Authorization", "Bearer " + tok.Value()},
		{"tenant prefix", "", "Bearer tenant-a:{token}", "Authorization", "Bearer tenant-a:" + tok.Value()},
		{"bare token in another header", "X-Api-Token", "{token}", "X-Api-Token", tok.Value()},
		{"suffix", "x-api-token", "JWT {token}; v=1", "X-Api-Token", "JWT " + tok.Value() + "; v=1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := &recorder{}
			tr := &Transport{Source: ts, Audience: FixedAudience(apiAudience), Base: base, Header: tc.header, Format: tc.format}
			req := httptest.NewRequest(http.MethodGet, "https://api.example.com/", nil)
			req.Header.Set(tc.wantHeader, "inbound value")
			_, err := tr.RoundTrip(req)
			require.NoError(t, err)
			sent := base.last.Load()
			assert.Equal(t, []string{tc.want}, sent.Header[tc.wantHeader], "replaced, never merged")
			assert.Equal(t, "inbound value", req.Header.Get(tc.wantHeader), "the caller's request is unmodified")
		})
	}
}

func TestTransportBadFormatSendsNothing(t *testing.T) {
	ts, fake, _ := newTestSource(t)
	base := &recorder{}
	tr := &Transport{Source: ts, Audience: FixedAudience(apiAudience), Base: base, Format: "Bearer {token}\r\nX-Evil: 1"}
	body := newBody()
	_, err := tr.RoundTrip(httptest.NewRequest(http.MethodPost, "https://api.example.com/", body))
	require.ErrorIs(t, err, ErrBadFormat)
	assert.Contains(t, err.Error(), "stsauth: Transport.Format: ")
	assert.True(t, body.closed.Load(), "body closed on error")
	assert.Zero(t, base.sent.Load(), "nothing sent")
	assert.Zero(t, fake.Calls(), "no token fetched")
}

// TestUnauthorizedRetryWithCustomHeaderAndFormat checks that the 401 retry
// reads and replaces the token in the configured header and format: the
// rejected token is invalidated and the retry carries a fresh one.
func TestUnauthorizedRetryWithCustomHeaderAndFormat(t *testing.T) {
	ts, fake, _ := newTestSource(t)
	first, err := ts.Token(context.Background(), apiAudience)
	require.NoError(t, err)
	rejected := "Tenant t1 " + first.Value()
	var (
		mu   sync.Mutex // guards seen
		seen []string
	)
	base := roundTripperFunc(func(r *http.Request) (*http.Response, error) {
		v := r.Header.Get("X-Api-Token")
		mu.Lock()
		seen = append(seen, v)
		mu.Unlock()
		status := http.StatusOK
		if v == rejected {
			status = http.StatusUnauthorized
		}
		return &http.Response{StatusCode: status, Body: io.NopCloser(strings.NewReader("x")), Request: r}, nil
	})
	tr := &Transport{Source: ts, Audience: FixedAudience(apiAudience), Base: base, Header: "X-Api-Token", Format: "Tenant t1 {token}"}

	resp, err := tr.RoundTrip(httptest.NewRequest(http.MethodGet, "https://api.example.com/", nil))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	require.Len(t, seen, 2)
	assert.Equal(t, rejected, seen[0])
	assert.NotEqual(t, seen[0], seen[1], "the retry re-sent the rejected token")
	assert.True(t, strings.HasPrefix(seen[1], "Tenant t1 eyJ"), "the retry keeps the format")
	assert.Equal(t, 2, fake.Calls(), "the rejected token was replaced by one fetch")
	now, err := ts.Token(context.Background(), apiAudience)
	require.NoError(t, err)
	assert.Equal(t, "Tenant t1 "+now.Value(), seen[1], "the cache holds the token the retry carried")
}
