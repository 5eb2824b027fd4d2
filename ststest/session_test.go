package ststest

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/smithy-go"
	"github.com/go-jose/go-jose/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSessionExpiry(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	s := newTestServer(t, func(s *Server) { s.Now = clock.Now })
	keys := fetchKeys(t, s)
	session := clock.Now().Add(20 * time.Minute)
	s.SetSessionExpiry(session)

	creds, err := s.Client().Options().Credentials.Retrieve(t.Context())
	require.NoError(t, err)
	assert.True(t, creds.CanExpire)
	assert.Equal(t, session, creds.Expires)

	call := func(seconds int32) (string, error) {
		in := input("RS256", "https://api.example.com")
		in.DurationSeconds = aws.Int32(seconds)
		out, err := s.Client(noRetry).GetWebIdentityToken(t.Context(), in)
		if err != nil {
			return "", err
		}
		return aws.ToString(out.WebIdentityToken), nil
	}
	code := func(err error) string {
		var api smithy.APIError
		require.ErrorAs(t, err, &api)
		return api.ErrorCode()
	}

	_, err = call(3600)
	assert.Equal(t, "SessionDurationEscalationException", code(err))
	_, err = call(20*60 + 1)
	assert.Equal(t, "SessionDurationEscalationException", code(err), "one second past the session")
	tok, err := call(20 * 60)
	require.NoError(t, err, "a token ending with the session")
	verify(t, keys, tok, "RS256")
	assert.Equal(t, "2026-03-01T12:20:00Z", sessionExpClaim(t, tok))

	clock.mu.Lock()
	clock.t = session
	clock.mu.Unlock()
	_, err = call(60)
	assert.Equal(t, "ExpiredToken", code(err))

	s.SetSessionExpiry(time.Time{})
	tok, err = call(3600)
	require.NoError(t, err)
	assert.Empty(t, sessionExpClaim(t, tok), "no session expiry, no claim")
	creds, err = s.Client().Options().Credentials.Retrieve(t.Context())
	require.NoError(t, err)
	assert.False(t, creds.CanExpire)
}

// sessionExpClaim returns the original_session_exp claim of token.
func sessionExpClaim(t *testing.T, token string) string {
	t.Helper()
	jws, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.RS256})
	require.NoError(t, err)
	var c struct {
		AWS struct {
			OriginalSessionExp string `json:"original_session_exp"`
		} `json:"https://sts.amazonaws.com/"`
	}
	require.NoError(t, json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &c))
	return c.AWS.OriginalSessionExp
}

func TestThrottle(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	s := newTestServer(t, func(s *Server) {
		s.Now = clock.Now
		s.SetThrottle(2, 3) // before Start, where there is no clock yet
	})
	call := func() string {
		_, err := s.Client(noRetry).GetWebIdentityToken(t.Context(), input("ES384", "https://api.example.com"))
		if err == nil {
			return "ok"
		}
		var api smithy.APIError
		require.ErrorAs(t, err, &api)
		return api.ErrorCode()
	}
	var got []string
	for range 4 {
		got = append(got, call())
	}
	assert.Equal(t, []string{"ok", "ok", "ok", "Throttling"}, got, "a full bucket of 3, then throttled")
	clock.mu.Lock()
	clock.t = clock.t.Add(time.Second) // 2 tokens back
	clock.mu.Unlock()
	got = nil
	for range 3 {
		got = append(got, call())
	}
	assert.Equal(t, []string{"ok", "ok", "Throttling"}, got)
	assert.Equal(t, 2, s.Throttled())
	assert.Equal(t, 7, s.Calls())
	s.SetThrottle(0, 0)
	assert.Equal(t, "ok", call())
}
