package grpccheck

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/stsauth/stsauth"
	"github.com/stsauth/stsauth/ststest"
	"github.com/stsauth/stsauth/verify"
)

// The credentials satisfy grpc's interface without the root module
// importing grpc.
var _ credentials.PerRPCCredentials = (*stsauth.PerRPCCredentials)(nil)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitTimeout bounds every wait for something that should happen at once,
// so a broken build fails instead of hanging; it never times a success.
const waitTimeout = 30 * time.Second

// audience is the audience the credentials derive by default from a
// connection to 127.0.0.1: grpc's call URI is https://<authority>/<service>.
const audience = "https://127.0.0.1"

// api is a gRPC server on 127.0.0.1 that verifies every call's token with
// package verify in an interceptor, and answers Unauthenticated to tokens
// it does not accept or whose jti it was told to reject.
type api struct {
	addr  string
	pool  *x509.CertPool // trusts the server's certificate
	calls atomic.Int32   // calls that reached the service

	mu       sync.Mutex
	rejected map[string]bool // jti → answer Unauthenticated
	lastJTI  string
}

// reject makes the server refuse the token with the given jti.
func (a *api) reject(jti string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.rejected[jti] = true
}

func (a *api) last() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.lastJTI
}

// newAPI starts the server, over TLS unless plaintext, trusting the tokens
// of sts for audience.
func newAPI(t *testing.T, sts *ststest.Server, plaintext bool) *api {
	t.Helper()
	v, err := verify.New(verify.Config{
		Issuers:                      []verify.Issuer{{URL: sts.Issuer()}},
		Audiences:                    []string{audience},
		AllowInsecureLoopbackIssuers: true,
	})
	require.NoError(t, err)
	a := &api{rejected: map[string]bool{}}
	check := func(ctx context.Context) error {
		md, _ := metadata.FromIncomingContext(ctx)
		vals := md.Get("authorization")
		if len(vals) != 1 {
			return status.Error(codes.Unauthenticated, "want one authorization value")
		}
		raw, ok := strings.CutPrefix(vals[0], "Bearer ")
		if !ok {
			return status.Error(codes.Unauthenticated, "want a bearer token")
		}
		claims, err := v.Verify(ctx, raw)
		if err != nil {
			return status.Error(codes.Unauthenticated, err.Error()) // verify's errors never hold the token
		}
		a.mu.Lock()
		defer a.mu.Unlock()
		a.lastJTI = claims.ID
		if a.rejected[claims.ID] {
			return status.Error(codes.Unauthenticated, "token revoked")
		}
		return nil
	}
	opts := []grpc.ServerOption{grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := check(ctx); err != nil {
			return nil, err
		}
		a.calls.Add(1)
		return handler(ctx, req)
	})}
	if !plaintext {
		cert, pool := selfSigned(t)
		a.pool = pool
		opts = append(opts, grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})))
	}
	srv := grpc.NewServer(opts...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	a.addr = ln.Addr().String()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return a
}

// selfSigned returns a certificate for 127.0.0.1 and a pool that trusts it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "grpccheck"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	leaf, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// newSource returns a token source over sts, closed with the test.
func newSource(t *testing.T, sts *ststest.Server, opts ...stsauth.Option) *stsauth.TokenSource {
	t.Helper()
	src, err := stsauth.NewTokenSource(sts.Client(), opts...)
	require.NoError(t, err)
	t.Cleanup(func() { src.Close() })
	return src
}

// isUnauthenticated is the rejected predicate of Retry for grpc.
func isUnauthenticated(err error) bool { return status.Code(err) == codes.Unauthenticated }

// dial connects to a over TLS with creds on every call and a unary
// interceptor that replaces rejected tokens with creds.Retry.
func dial(t *testing.T, a *api, creds *stsauth.PerRPCCredentials) healthpb.HealthClient {
	t.Helper()
	return dialWith(t, a, creds,
		grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			return creds.Retry(ctx, isUnauthenticated, func(ctx context.Context) error {
				return invoker(ctx, method, req, reply, cc, opts...)
			})
		}))
}

// dialWith connects to a over TLS with creds on every call.
func dialWith(t *testing.T, a *api, creds credentials.PerRPCCredentials, opts ...grpc.DialOption) healthpb.HealthClient {
	t.Helper()
	conn, err := grpc.NewClient(a.addr, append([]grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: a.pool, MinVersion: tls.VersionTLS12})),
		grpc.WithPerRPCCredentials(creds),
	}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return healthpb.NewHealthClient(conn)
}

func check(ctx context.Context, c healthpb.HealthClient) error {
	resp, err := c.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return err
	}
	if resp.Status != healthpb.HealthCheckResponse_SERVING {
		return errors.New("not serving: " + resp.Status.String())
	}
	return nil
}

// TestCallCarriesVerifiedToken: every call carries a token that package
// verify accepts, for the audience derived from the connection's
// authority, and the token is fetched once for many calls.
func TestCallCarriesVerifiedToken(t *testing.T) {
	sts := ststest.NewServer()
	t.Cleanup(sts.Close)
	a := newAPI(t, sts, false)
	c := dial(t, a, &stsauth.PerRPCCredentials{Source: newSource(t, sts)})
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	for range 3 {
		require.NoError(t, check(ctx, c))
	}
	assert.Equal(t, int32(3), a.calls.Load())
	assert.Equal(t, 1, sts.CallsFor(audience))
	assert.Equal(t, 1, sts.Calls())
}

// TestStaticAudience: a FixedAudience is used whatever the authority.
func TestStaticAudience(t *testing.T) {
	sts := ststest.NewServer()
	t.Cleanup(sts.Close)
	a := newAPI(t, sts, false)
	c := dial(t, a, &stsauth.PerRPCCredentials{Source: newSource(t, sts), Audience: stsauth.StaticAudience(audience)})
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	require.NoError(t, check(ctx, c))
	assert.Equal(t, 1, sts.CallsFor(audience))
}

// TestDeadlineWhileSTSHangs: with STS hanging and a fetch timeout of a
// minute, a call fails at its own deadline without reaching the server;
// once STS answers, the same connection works.
func TestDeadlineWhileSTSHangs(t *testing.T) {
	sts := ststest.NewServer()
	t.Cleanup(sts.Close)
	release := sts.Hold()
	defer release()
	a := newAPI(t, sts, false)
	c := dial(t, a, &stsauth.PerRPCCredentials{Source: newSource(t, sts, stsauth.WithFetchTimeout(time.Minute))})

	const deadline = 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	start := time.Now()
	err := check(ctx, c)
	elapsed := time.Since(start)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "context deadline exceeded")
	// The call ended with its deadline, not with the minute's fetch
	// timeout; the bound is loose only for a loaded machine.
	assert.Less(t, elapsed, deadline+20*time.Second)
	assert.Equal(t, int32(0), a.calls.Load(), "a call without a token reached the server")
	// One fetch, still in flight: it may not have reached the emulator yet
	// on a loaded machine, but it is never repeated for the call.
	assert.LessOrEqual(t, sts.Calls(), 1)

	release()
	ctx2, cancel2 := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel2()
	require.NoError(t, check(ctx2, c))
	assert.Equal(t, int32(1), a.calls.Load())
}

// TestUnauthenticatedReplacesToken: the server answers Unauthenticated to a
// token (revoked, say); the interceptor drops exactly that token and sends
// the call once more with a fresh one, which the server accepts. A server
// that rejects every token gets one retry per token, not a storm.
func TestUnauthenticatedReplacesToken(t *testing.T) {
	sts := ststest.NewServer()
	t.Cleanup(sts.Close)
	a := newAPI(t, sts, false)
	c := dial(t, a, &stsauth.PerRPCCredentials{Source: newSource(t, sts)})
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()

	require.NoError(t, check(ctx, c))
	first := a.last()
	a.reject(first)
	require.NoError(t, check(ctx, c))
	assert.NotEqual(t, first, a.last(), "the call was retried with the rejected token")
	assert.Equal(t, 2, sts.Calls())
	assert.Equal(t, int32(2), a.calls.Load())

	// Reject the replacement too: the call fails Unauthenticated, once,
	// without another STS call.
	a.reject(a.last())
	err := check(ctx, c)
	assert.Equal(t, codes.Unauthenticated, status.Code(err))
	assert.Equal(t, 2, sts.Calls())
}

// TestInsecureChannelRefused: over a connection without transport security
// the credentials are refused unless AllowInsecure is set.
func TestInsecureChannelRefused(t *testing.T) {
	sts := ststest.NewServer()
	t.Cleanup(sts.Close)
	a := newAPI(t, sts, true)
	src := newSource(t, sts)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()

	t.Run("refused", func(t *testing.T) {
		conn, err := grpc.NewClient(a.addr,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithPerRPCCredentials(&stsauth.PerRPCCredentials{Source: src}))
		if err == nil {
			// Whether grpc refuses at NewClient or at the call is its
			// choice; either way nothing is sent.
			defer conn.Close()
			err = check(ctx, healthpb.NewHealthClient(conn))
		}
		require.Error(t, err)
		assert.Contains(t, err.Error(), "transport")
		assert.Equal(t, int32(0), a.calls.Load())
		assert.Equal(t, 0, sts.Calls(), "a token was minted for an insecure connection")
	})
	t.Run("per call refused", func(t *testing.T) {
		conn, err := grpc.NewClient(a.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		require.NoError(t, err)
		defer conn.Close()
		_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{},
			grpc.PerRPCCredentials(&stsauth.PerRPCCredentials{Source: src}))
		assert.Equal(t, codes.Unauthenticated, status.Code(err))
		assert.Contains(t, err.Error(), "insecure")
		assert.Equal(t, int32(0), a.calls.Load())
		assert.Equal(t, 0, sts.Calls(), "a token was minted for an insecure connection")
	})
	t.Run("allowed", func(t *testing.T) {
		conn, err := grpc.NewClient(a.addr,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithPerRPCCredentials(&stsauth.PerRPCCredentials{Source: src, AllowInsecure: true}))
		require.NoError(t, err)
		defer conn.Close()
		require.NoError(t, check(ctx, healthpb.NewHealthClient(conn)))
		assert.Equal(t, int32(1), a.calls.Load())
	})
}
