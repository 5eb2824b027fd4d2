package stsauth_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/stsauth/stsauth"
	"github.com/stsauth/stsauth/ststest"
)

// newUpstream starts an API that reports whether a bearer token arrived.
func newUpstream() *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme, _, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		fmt.Fprintf(w, "scheme=%s", scheme)
	}))
}

func get(client *http.Client, url string) string {
	resp, err := client.Get(url)
	if err != nil {
		return "error: " + err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

// Send requests with a token for one audience through a guarded clone of
// http.DefaultTransport (a nil Base means a shared one). The token is
// fetched once and served from the cache afterwards.
func ExampleTransport() {
	sts := ststest.NewServer() // in production: sts.NewFromConfig(cfg)
	defer sts.Close()
	api := newUpstream()
	defer api.Close()

	src, err := stsauth.NewTokenSource(sts.Client())
	if err != nil {
		panic(err)
	}
	defer src.Close()
	client := &http.Client{Transport: &stsauth.Transport{
		Source:   src,
		Audience: stsauth.StaticAudience("https://api.example.com"),
		Base:     stsauth.NewGuardedTransport(),
	}}

	for range 3 {
		fmt.Println(get(client, api.URL))
	}
	fmt.Println("STS calls:", sts.Calls())
	// Output:
	// scheme=Bearer
	// scheme=Bearer
	// scheme=Bearer
	// STS calls: 1
}

// Ask for one token that several APIs accept: the aud claim lists them all.
func ExampleTokenSource_Token() {
	sts := ststest.NewServer()
	defer sts.Close()
	src, err := stsauth.NewTokenSource(sts.Client(), stsauth.WithSigningAlgorithm(stsauth.ES384))
	if err != nil {
		panic(err)
	}
	defer src.Close()

	aud, err := stsauth.NewAudience("https://b.example.com", "https://a.example.com")
	if err != nil {
		panic(err)
	}
	tok, err := src.Token(context.Background(), aud)
	if err != nil {
		panic(err)
	}
	fmt.Println("audience:", tok.Audience)
	fmt.Println("JWT parts:", len(strings.Split(tok.Value(), ".")))
	fmt.Println("printed:", strings.Contains(fmt.Sprint(tok), tok.Value()))
	// Output:
	// audience: [https://a.example.com https://b.example.com]
	// JWT parts: 3
	// printed: false
}

// Derive each request's audience from its origin, and allow only known hosts
// to receive tokens.
func ExampleHostAudience() {
	sts := ststest.NewServer()
	defer sts.Close()
	api := newUpstream()
	defer api.Close()

	src, err := stsauth.NewTokenSource(sts.Client())
	if err != nil {
		panic(err)
	}
	defer src.Close()
	allowed, err := stsauth.ParseAllowedHosts("127.0.0.1", "*.internal.example.com")
	if err != nil {
		panic(err)
	}
	client := &http.Client{Transport: &stsauth.Transport{
		Source:       src,
		Audience:     stsauth.HostAudience{},
		AllowedHosts: allowed,
	}}

	fmt.Println(get(client, api.URL+"/a"))
	fmt.Println(get(client, api.URL+"/b"))
	fmt.Println(sts.CallsFor("http://127.0.0.1"), "STS call for http://127.0.0.1")
	_, err = client.Get("http://169.254.169.254/latest/meta-data/")
	fmt.Println(strings.Contains(err.Error(), "host not allowed"))
	// Output:
	// scheme=Bearer
	// scheme=Bearer
	// 1 STS call for http://127.0.0.1
	// true
}

// NewClient loads the AWS configuration the SDK's usual way. Here the STS
// endpoint is the emulator, named by AWS_ENDPOINT_URL_STS.
func ExampleNewClient() {
	sts := ststest.NewServer()
	defer sts.Close()
	api := newUpstream()
	defer api.Close()

	for k, v := range map[string]string{
		"AWS_ENDPOINT_URL_STS":        sts.URL,
		"AWS_REGION":                  "us-east-1",
		"AWS_ACCESS_KEY_ID":           "AKIDEXAMPLE",
		"AWS_SECRET_ACCESS_KEY":       "example-secret",
		"AWS_EC2_METADATA_DISABLED":   "true",
		"AWS_CONFIG_FILE":             os.DevNull,
		"AWS_SHARED_CREDENTIALS_FILE": os.DevNull,
	} {
		old, had := os.LookupEnv(k)
		os.Setenv(k, v)
		defer func() {
			if had {
				os.Setenv(k, old)
			} else {
				os.Unsetenv(k)
			}
		}()
	}

	client, err := stsauth.NewClient(context.Background(), []string{"https://api.example.com"})
	if err != nil {
		panic(err)
	}
	// Stop the token source's background refresh when done with the client.
	defer client.Transport.(*stsauth.Transport).Source.Close()
	fmt.Println("STS calls before the first request:", sts.Calls())
	fmt.Println(get(client, api.URL))
	fmt.Println("STS calls after:", sts.Calls())
	// Output:
	// STS calls before the first request: 0
	// scheme=Bearer
	// STS calls after: 1
}

// Give a base transport of your own the guards a nil Base has: a dialer that
// refuses link-local and instance-metadata addresses once names are
// resolved, and a forward proxy that never carries plain http.
func ExampleGuardDialControl() {
	dialer := &net.Dialer{Timeout: 10 * time.Second, Control: stsauth.GuardDialControl}
	base := &http.Transport{
		DialContext: dialer.DialContext,
		Proxy:       stsauth.GuardProxy(http.ProxyFromEnvironment),
	}
	defer base.CloseIdleConnections()

	// Whatever name resolves to 169.254.169.254, the connection is refused
	// before a packet is sent.
	_, err := base.DialContext(context.Background(), "tcp", "169.254.169.254:80")
	fmt.Println("refused:", errors.Is(err, stsauth.ErrHostNotAllowed))

	// A plain http request through a forward proxy is refused, too.
	viaProxy := stsauth.GuardProxy(http.ProxyURL(&url.URL{Scheme: "http", Host: "proxy.internal:3128"}))
	_, err = viaProxy(httptest.NewRequest(http.MethodGet, "http://api.example.com/", nil))
	fmt.Println("clear text refused:", errors.Is(err, stsauth.ErrCleartext))
	// Output:
	// refused: true
	// clear text refused: true
}

// A caller with a transport of its own replaces a token the upstream
// rejects: Invalidate drops exactly that token, and the next Token call
// fetches a fresh one. A token fetched to replace another is not dropped
// again, so a rejecting upstream cannot turn each request into an STS call.
func ExampleTokenSource_Invalidate() {
	sts := ststest.NewServer()
	defer sts.Close()
	src, err := stsauth.NewTokenSource(sts.Client())
	if err != nil {
		panic(err)
	}
	defer src.Close()
	ctx := context.Background()
	aud := stsauth.MustAudience("https://api.example.com")

	tok, err := src.Token(ctx, aud)
	if err != nil {
		panic(err)
	}
	// Suppose the upstream answered 401 to tok.
	fmt.Println("dropped:", src.Invalidate(tok))
	fresh, err := src.Token(ctx, aud)
	if err != nil {
		panic(err)
	}
	fmt.Println("new token:", fresh.Value() != tok.Value())
	fmt.Println("dropped again:", src.Invalidate(fresh))
	fmt.Println("STS calls:", sts.Calls())
	// Output:
	// dropped: true
	// new token: true
	// dropped again: false
	// STS calls: 2
}

// Attach tokens to gRPC calls: pass the credentials to
// grpc.WithPerRPCCredentials, which calls GetRequestMetadata with each
// call's context and URI, as here. With no Audience, the audience is the
// origin of the connection's authority. Retry, in a unary client
// interceptor, replaces a token the server answers Unauthenticated to.
func ExamplePerRPCCredentials() {
	sts := ststest.NewServer()
	defer sts.Close()
	src, err := stsauth.NewTokenSource(sts.Client())
	if err != nil {
		panic(err)
	}
	defer src.Close()
	creds := &stsauth.PerRPCCredentials{Source: src}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second) // the call's deadline
	defer cancel()
	md, err := creds.GetRequestMetadata(ctx, "https://127.0.0.1:50051/helloworld.Greeter")
	if err != nil {
		panic(err)
	}
	scheme, _, _ := strings.Cut(md["authorization"], " ")
	fmt.Println("authorization:", scheme)
	fmt.Println("STS calls for https://127.0.0.1:", sts.CallsFor("https://127.0.0.1"))
	fmt.Println("requires transport security:", creds.RequireTransportSecurity())
	// Output:
	// authorization: Bearer
	// STS calls for https://127.0.0.1: 1
	// requires transport security: true
}
