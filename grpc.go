package stsauth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
)

// grpcAuthorizationKey is the gRPC metadata key that carries the token.
// gRPC metadata keys are lower case; HTTP/2 sends it as the authorization
// header.
const grpcAuthorizationKey = "authorization"

// PerRPCCredentials puts a web identity token on each gRPC call, as the
// metadata "authorization: Bearer <jwt>". It has the method set of grpc's
// credentials.PerRPCCredentials, so it can be passed to
// grpc.WithPerRPCCredentials (every call of a connection) or
// grpc.PerRPCCredentials (one call), without this package depending on
// grpc:
//
//	creds := &stsauth.PerRPCCredentials{Source: src, Audience: stsauth.StaticAudience("https://api.example.com")}
//	conn, err := grpc.NewClient(target,
//		grpc.WithTransportCredentials(credentials.NewTLS(nil)),
//		grpc.WithPerRPCCredentials(creds),
//		grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any,
//			cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
//			return creds.Retry(ctx, func(err error) bool { return status.Code(err) == codes.Unauthenticated },
//				func(ctx context.Context) error { return invoker(ctx, method, req, reply, cc, opts...) })
//		}))
//
// Unlike grpc's credentials/oauth.TokenSource, it waits for a token with
// the call's own context: a call whose deadline passes while STS is slow or
// hangs fails at its deadline, and the shared STS fetch carries on for the
// other callers (see [TokenSource.Token]).
//
// It refuses to be used over a connection without transport security
// unless AllowInsecure is set: grpc checks RequireTransportSecurity when
// the connection is made and fails the calls of an insecure one.
//
// A PerRPCCredentials is safe for concurrent use. Its fields must not
// change once it is in use.
type PerRPCCredentials struct {
	// Source mints and caches the tokens. It is required.
	Source *TokenSource
	// Audience chooses each call's audience set. It is given an
	// *http.Request for a POST to the call's URI, the
	// "https://<authority>/<package.Service>" that grpc passes to
	// GetRequestMetadata, so [HostAudience] derives "https://<host>" from
	// the connection's authority, and an [AudienceFunc] may look at the
	// service's path. If nil, HostAudience is used. A [FixedAudience] (as
	// [StaticAudience] returns) is used without looking at the URI.
	Audience AudienceResolver
	// AllowInsecure, if true, lets the token be sent over a connection
	// without transport security (grpc's insecure credentials), where
	// anyone on the network path can read and replay it. If false, the
	// default, grpc refuses such connections.
	AllowInsecure bool
}

// GetRequestMetadata returns the metadata to send with one call: its token
// under "authorization". grpc calls it with the call's context and the
// call's URI (uri[0]). It waits for a token at most until ctx ends. It
// fails, and grpc fails the call without sending it, if the audience
// cannot be resolved or no token can be had; a token failure wraps a
// *[TokenError]. The error never holds a token.
func (c *PerRPCCredentials) GetRequestMetadata(ctx context.Context, uri ...string) (map[string]string, error) {
	if c.Source == nil {
		return nil, errors.New("stsauth: PerRPCCredentials has no Source")
	}
	aud, err := c.resolve(ctx, uri)
	if err != nil {
		return nil, err
	}
	tok, err := c.Source.Token(ctx, aud)
	if err != nil {
		return nil, err
	}
	if s, ok := ctx.Value(sentKey{c}).(*sentToken); ok {
		s.set(tok)
	}
	return map[string]string{grpcAuthorizationKey: tok.bearerValue()}, nil
}

// RequireTransportSecurity reports whether the token may only be sent over
// a connection with transport security: true unless AllowInsecure is set.
func (c *PerRPCCredentials) RequireTransportSecurity() bool { return !c.AllowInsecure }

// resolve returns the audience set of a call with URI uri[0].
func (c *PerRPCCredentials) resolve(ctx context.Context, uri []string) (Audience, error) {
	if f, ok := c.Audience.(FixedAudience); ok {
		return f.ResolveAudience(nil)
	}
	resolver := c.Audience
	if resolver == nil {
		resolver = HostAudience{}
	}
	if len(uri) == 0 || uri[0] == "" {
		return Audience{}, fmt.Errorf("stsauth: %w: grpc passed no URI to derive the audience from; use a FixedAudience", ErrInvalidAudience)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, uri[0], nil)
	if err != nil {
		return Audience{}, fmt.Errorf("stsauth: %w: cannot derive an audience from the call's URI: %v", ErrInvalidAudience, err)
	}
	return resolver.ResolveAudience(req)
}

// Retry runs call, one gRPC call made with the context it is given, and
// replaces a token the server rejects, as [Transport] does for a 401: if
// call fails with an error that rejected reports as a refusal of the
// token (for grpc, status.Code(err) == codes.Unauthenticated) and the call
// carried a token from c, Retry drops exactly that token from the source
// ([TokenSource.Invalidate]) and runs call once more, with a fresh token
// or one another caller fetched meanwhile. A token fetched to replace a
// rejected one is not dropped again, so a server that rejects every token
// costs one extra STS call per token lifetime, not one per call. Without a
// refusal, or when no new token can be had, it returns call's error as it
// came.
//
// Retry suits a unary client interceptor (see [PerRPCCredentials]). A
// streaming call learns of the refusal only when it receives; wrap in
// Retry the code that opens the stream and reads its first message.
func (c *PerRPCCredentials) Retry(ctx context.Context, rejected func(error) bool, call func(ctx context.Context) error) error {
	if c.Source == nil {
		return call(ctx)
	}
	sent := new(sentToken)
	err := call(context.WithValue(ctx, sentKey{c}, sent))
	if err == nil || !rejected(err) {
		return err
	}
	tok := sent.get()
	if tok.b == nil {
		return err // the call carried no token of c: nothing to replace
	}
	if _, ok := c.Source.replace(ctx, tok); !ok {
		return err
	}
	c.Source.countRetry(ctx, tok.Audience)
	return call(ctx)
}

// sentKey is the context key under which [PerRPCCredentials.Retry] asks the
// credentials c to record the token a call carried.
type sentKey struct{ c *PerRPCCredentials }

// sentToken records the token a call carried. grpc may ask for metadata
// more than once per call (a transparent retry), from another goroutine.
type sentToken struct {
	mu  sync.Mutex // guards tok
	tok Token
}

func (s *sentToken) set(tok Token) {
	s.mu.Lock()
	s.tok = tok
	s.mu.Unlock()
}

func (s *sentToken) get() Token {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tok
}
