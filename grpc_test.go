package stsauth

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// errUnauthenticated stands for a gRPC status error with code
// Unauthenticated, which this package cannot name without importing grpc.
var errUnauthenticated = errors.New("rpc error: code = Unauthenticated")

func isUnauthenticated(err error) bool { return errors.Is(err, errUnauthenticated) }

func TestPerRPCCredentialsMetadata(t *testing.T) {
	ts, fake, _ := newTestSource(t)
	creds := &PerRPCCredentials{Source: ts, Audience: FixedAudience(apiAudience)}

	md, err := creds.GetRequestMetadata(context.Background(), "https://127.0.0.1:8443/pkg.Service")
	require.NoError(t, err)
	tok, err := ts.Token(context.Background(), apiAudience)
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"authorization": "Bearer " + tok.Value()}, md)
	assert.Equal(t, 1, fake.Calls())
	assert.True(t, creds.RequireTransportSecurity())
	assert.False(t, (&PerRPCCredentials{Source: ts, AllowInsecure: true}).RequireTransportSecurity())
}

func TestPerRPCCredentialsAudienceFromURI(t *testing.T) {
	ts, fake, _ := newTestSource(t)
	tests := []struct {
		name     string
		audience AudienceResolver
		uri      []string
		want     string // the audience asked of STS; empty for an error
	}{
		{name: "host by default", uri: []string{"https://API.example.com:8443/pkg.Service"}, want: "https://api.example.com"},
		{name: "HostAudience", audience: HostAudience{}, uri: []string{"https://[::1]:50051/pkg.Service"}, want: "https://[::1]"},
		{name: "AudienceFunc sees the service", audience: AudienceFunc(func(r *http.Request) (Audience, error) {
			return NewAudience("urn:grpc" + r.URL.Path)
		}), uri: []string{"https://127.0.0.1:1/pkg.Service"}, want: "urn:grpc/pkg.Service"},
		{name: "no URI", uri: nil},
		{name: "empty URI", uri: []string{""}},
		{name: "bad URI", uri: []string{"https://%zz/pkg.Service"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			creds := &PerRPCCredentials{Source: ts, Audience: tc.audience}
			before := fake.Calls()
			md, err := creds.GetRequestMetadata(context.Background(), tc.uri...)
			if tc.want == "" {
				require.ErrorIs(t, err, ErrInvalidAudience)
				assert.Nil(t, md)
				assert.Equal(t, before, fake.Calls(), "an STS call for a call without an audience")
				return
			}
			require.NoError(t, err)
			fake.mu.Lock()
			got := fake.inputs[len(fake.inputs)-1].Audience
			fake.mu.Unlock()
			assert.Equal(t, []string{tc.want}, got)
		})
	}
}

// TestPerRPCCredentialsHonoursDeadline: a call whose context ends while STS
// hangs fails at once with the context's error, and the fetch goes on for
// the others.
func TestPerRPCCredentialsHonoursDeadline(t *testing.T) {
	ts, fake, _ := newTestSource(t)
	gate := make(chan struct{})
	started := make(chan struct{}, 1)
	fake.set(func(f *fakeSTS) { f.gate, f.started = gate, started })
	creds := &PerRPCCredentials{Source: ts, Audience: FixedAudience(apiAudience)}

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := creds.GetRequestMetadata(ctx, "https://api.example.com/pkg.Service")
		errc <- err
	}()
	<-started // STS has the call and hangs
	cancel()  // the call's deadline passes
	err := <-errc
	require.ErrorIs(t, err, context.Canceled)
	var te *TokenError
	require.ErrorAs(t, err, &te)

	close(gate)
	md, err := creds.GetRequestMetadata(context.Background(), "https://api.example.com/pkg.Service")
	require.NoError(t, err)
	assert.NotEmpty(t, md["authorization"])
	assert.Equal(t, 1, fake.Calls(), "the hung fetch served the next caller")
}

func TestPerRPCCredentialsNoSource(t *testing.T) {
	_, err := (&PerRPCCredentials{}).GetRequestMetadata(context.Background(), "https://api.example.com/x")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "stsauth: PerRPCCredentials has no Source")
}

// call is a fake gRPC call: it asks creds for metadata with its context, as
// grpc does, and has the server reject the tokens in rejected.
type fakeCall struct {
	creds    *PerRPCCredentials
	rejected func(jwt string) bool
	sent     []string
}

func (f *fakeCall) invoke(ctx context.Context) error {
	md, err := f.creds.GetRequestMetadata(ctx, "https://api.example.com/pkg.Service")
	if err != nil {
		return err
	}
	jwt := md["authorization"][len(bearerPrefix):]
	f.sent = append(f.sent, jwt)
	if f.rejected(jwt) {
		return errUnauthenticated
	}
	return nil
}

func TestPerRPCCredentialsRetryReplacesRejectedToken(t *testing.T) {
	ts, fake, _ := newTestSource(t)
	creds := &PerRPCCredentials{Source: ts, Audience: FixedAudience(apiAudience)}
	ctx := context.Background()
	first, err := ts.Token(ctx, apiAudience)
	require.NoError(t, err)

	call := &fakeCall{creds: creds, rejected: func(jwt string) bool { return jwt == first.Value() }}
	require.NoError(t, creds.Retry(ctx, isUnauthenticated, call.invoke))
	require.Len(t, call.sent, 2)
	assert.Equal(t, first.Value(), call.sent[0])
	assert.NotEqual(t, first.Value(), call.sent[1])
	assert.Equal(t, 2, fake.Calls())

	// The next call uses the replacement without another STS call.
	require.NoError(t, creds.Retry(ctx, isUnauthenticated, call.invoke))
	assert.Equal(t, call.sent[1], call.sent[2])
	assert.Equal(t, 2, fake.Calls())
}

func TestPerRPCCredentialsRetryOnlyOnce(t *testing.T) {
	ts, fake, _ := newTestSource(t)
	creds := &PerRPCCredentials{Source: ts, Audience: FixedAudience(apiAudience)}
	ctx := context.Background()
	call := &fakeCall{creds: creds, rejected: func(string) bool { return true }}

	err := creds.Retry(ctx, isUnauthenticated, call.invoke)
	require.ErrorIs(t, err, errUnauthenticated)
	assert.Len(t, call.sent, 2)
	assert.Equal(t, 2, fake.Calls())

	// The replacement is rejected too: it is not dropped again, so the
	// call is not retried and STS is not called.
	err = creds.Retry(ctx, isUnauthenticated, call.invoke)
	require.ErrorIs(t, err, errUnauthenticated)
	assert.Len(t, call.sent, 3)
	assert.Equal(t, 2, fake.Calls())
}

func TestPerRPCCredentialsRetryLeavesOtherErrors(t *testing.T) {
	ts, fake, _ := newTestSource(t)
	creds := &PerRPCCredentials{Source: ts, Audience: FixedAudience(apiAudience)}
	ctx := context.Background()
	other := errors.New("rpc error: code = Unavailable")

	calls := 0
	err := creds.Retry(ctx, isUnauthenticated, func(ctx context.Context) error {
		calls++
		_, err := creds.GetRequestMetadata(ctx, "https://api.example.com/pkg.Service")
		require.NoError(t, err)
		return other
	})
	require.ErrorIs(t, err, other)
	assert.Equal(t, 1, calls)

	// Unauthenticated, but no token of creds was sent (another
	// credential, or the call failed before): nothing to replace.
	calls = 0
	err = creds.Retry(ctx, isUnauthenticated, func(context.Context) error {
		calls++
		return errUnauthenticated
	})
	require.ErrorIs(t, err, errUnauthenticated)
	assert.Equal(t, 1, calls)

	// The token of another PerRPCCredentials does not count either.
	otherCreds := &PerRPCCredentials{Source: ts, Audience: FixedAudience(apiAudience)}
	calls = 0
	err = creds.Retry(ctx, isUnauthenticated, func(ctx context.Context) error {
		calls++
		_, err := otherCreds.GetRequestMetadata(ctx, "https://api.example.com/pkg.Service")
		require.NoError(t, err)
		return errUnauthenticated
	})
	require.ErrorIs(t, err, errUnauthenticated)
	assert.Equal(t, 1, calls)
	assert.Equal(t, 1, fake.Calls())
}

// TestPerRPCCredentialsRetryFetchFails: when no new token can be had the
// call's own error is returned, without a second call.
func TestPerRPCCredentialsRetryFetchFails(t *testing.T) {
	ts, fake, _ := newTestSource(t)
	creds := &PerRPCCredentials{Source: ts, Audience: FixedAudience(apiAudience)}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	calls := 0
	err := creds.Retry(ctx, isUnauthenticated, func(ctx context.Context) error {
		calls++
		_, err := creds.GetRequestMetadata(ctx, "https://api.example.com/pkg.Service")
		require.NoError(t, err)
		fake.set(func(f *fakeSTS) { f.fail = errors.New("sts down") })
		return errUnauthenticated
	})
	require.ErrorIs(t, err, errUnauthenticated)
	assert.Equal(t, 1, calls)
}
