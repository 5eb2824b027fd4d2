package stsauth

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stsauth/stsauth/ststest"
)

// sessionSource is a source over ststest, whose caller's session expires
// in left, sharing a fake clock. With hide set, the client is not an
// *sts.Client, so the source cannot see the credentials' expiry.
func sessionSource(t *testing.T, left time.Duration, hide bool, opts ...Option) (*TokenSource, *ststest.Server, *fakeClock) {
	t.Helper()
	clock := newFakeClock()
	srv := ststest.NewUnstartedServer()
	srv.Now = clock.Now
	srv.Start()
	t.Cleanup(srv.Close)
	srv.SetSessionExpiry(clock.Now().Add(left))
	var client GetWebIdentityTokenAPIClient = srv.Client(func(o *sts.Options) { o.RetryMaxAttempts = 1 })
	if hide {
		client = clientFunc(client.GetWebIdentityToken)
	}
	ts, err := NewTokenSource(client, opts...)
	require.NoError(t, err)
	useClock(ts, clock)
	t.Cleanup(func() { ts.Close() })
	return ts, srv, clock
}

func TestSessionExpiryShortensTheRequestedDuration(t *testing.T) {
	ts, srv, clock := sessionSource(t, 20*time.Minute, false)
	start := clock.Now()
	tok, err := ts.Token(context.Background(), apiAudience)
	require.NoError(t, err)
	assert.Equal(t, 1, srv.Calls(), "the first call fits the session")
	assert.Equal(t, start.Add(19*time.Minute), tok.Expiry, "20 min of session less the 1 min margin")

	parsed, err := sessionClaims(tok.Value())
	require.NoError(t, err)
	assert.Equal(t, start.Add(20*time.Minute).UTC().Format(time.RFC3339), parsed["original_session_exp"])
}

// sessionClaims returns the https://sts.amazonaws.com/ claims of token.
func sessionClaims(token string) (map[string]any, error) {
	var claims struct {
		AWS map[string]any `json:"https://sts.amazonaws.com/"`
	}
	parsed, err := parseForTest(token)
	if err != nil {
		return nil, err
	}
	// Two statements: in one return, Go leaves unspecified whether
	// claims.AWS is read before or after the call fills it.
	err = parsed.UnsafeClaimsWithoutVerification(&claims)
	return claims.AWS, err
}

func TestSessionDurationEscalationRetriesShorter(t *testing.T) {
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	ts, srv, clock := sessionSource(t, 20*time.Minute, true, WithLogger(logger))
	start := clock.Now()
	tok, err := ts.Token(context.Background(), apiAudience)
	require.NoError(t, err)
	// 3600 s and 1800 s are refused; 900 s fits the 20 min session.
	assert.Equal(t, 3, srv.Calls())
	assert.Equal(t, start.Add(15*time.Minute), tok.Expiry)

	_, err = ts.Token(context.Background(), MustAudience("https://other.example.com"))
	require.NoError(t, err)
	assert.Equal(t, 6, srv.Calls())
	assert.Equal(t, 1, strings.Count(logs.String(), "SessionDurationEscalation")+strings.Count(logs.String(), "refused the token duration"), "logged once: %s", logs.String())
}

func TestSessionNearlyOverFailsClearly(t *testing.T) {
	t.Run("expiry known", func(t *testing.T) {
		ts, srv, _ := sessionSource(t, 90*time.Second, false)
		_, err := ts.Token(context.Background(), apiAudience)
		require.ErrorIs(t, err, ErrCredentialsExpiring)
		assert.Contains(t, err.Error(), "AWS credentials expire")
		assert.Equal(t, 0, srv.Calls(), "no STS call can succeed")
	})
	t.Run("expiry unknown", func(t *testing.T) {
		ts, srv, _ := sessionSource(t, 50*time.Second, true)
		_, err := ts.Token(context.Background(), apiAudience)
		require.ErrorIs(t, err, ErrCredentialsExpiring)
		var api smithy.APIError
		require.ErrorAs(t, err, &api)
		assert.Equal(t, "SessionDurationEscalationException", api.ErrorCode())
		// 3600, 1800, 900, 450, 225, 112 and 60 s.
		assert.Equal(t, 7, srv.Calls())
	})
}

func TestWithCredentialsBoundsAnyClient(t *testing.T) {
	clock := newFakeClock()
	fake := &fakeSTS{clock: clock}
	creds := aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		return aws.Credentials{AccessKeyID: "AKID", CanExpire: true, Expires: clock.Now().Add(10*time.Minute + 30*time.Second)}, nil
	})
	ts, err := NewTokenSource(fake, WithCredentials(creds))
	require.NoError(t, err)
	useClock(ts, clock)
	t.Cleanup(func() { ts.Close() })
	_, err = ts.Token(context.Background(), apiAudience)
	require.NoError(t, err)
	assert.EqualValues(t, 9*60+30, *fake.inputs[0].DurationSeconds)

	failing := aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		return aws.Credentials{}, errors.New("no credentials")
	})
	ts2, err := NewTokenSource(fake, WithCredentials(failing))
	require.NoError(t, err)
	useClock(ts2, clock)
	t.Cleanup(func() { ts2.Close() })
	_, err = ts2.Token(context.Background(), apiAudience)
	require.NoError(t, err, "a provider error is left for the STS call to report")
	assert.EqualValues(t, 3600, *fake.inputs[1].DurationSeconds)
}
