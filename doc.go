// Package stsauth mints AWS STS web identity tokens and attaches them to
// outgoing HTTP requests.
//
// AWS STS GetWebIdentityToken returns a short-lived JWT, signed by the
// account's issuer, that third-party APIs verify instead of holding API keys.
// A [TokenSource] mints those tokens and caches them per [Audience] set; a
// [Transport] wraps an [http.RoundTripper] and puts "Authorization: Bearer
// <jwt>" on each request:
//
//	cfg, _, err := stsauth.LoadAWSConfig(ctx) // config.LoadDefaultConfig, plus the Region on EC2
//	...
//	src, err := stsauth.NewTokenSource(sts.NewFromConfig(cfg))
//	...
//	defer src.Close()
//	client := &http.Client{Transport: &stsauth.Transport{
//		Source:   src,
//		Audience: stsauth.StaticAudience("https://api.example.com"),
//	}}
//
// [NewClient] does the same in one call. [PerRPCCredentials] puts the same
// tokens on gRPC calls, without this package importing grpc.
//
// # Caching and refresh
//
// The first request for an audience set makes one STS call, however many
// requests arrive together. Afterwards requests are served from the cache
// without waiting and without a lock that a refresh holds. When a token is
// within the refresh skew of its expiry (5 minutes by default, less a small
// random jitter per entry), one background refresh starts while requests keep
// getting the cached token; a scheduler goroutine refreshes, in that window,
// the sets that were used since their token was minted but see no request
// there, so a request after a quiet spell does not wait either. A set's first
// token is refreshed at a random moment of its lifetime, so sets minted
// together do not refresh together. If the refresh fails, the cached token is
// served until 10 seconds before it expires, and the refresh is retried with
// exponential backoff and full jitter (1 s doubling to 30 s). With no token
// and STS failing, requests get the last error at once until the backoff
// allows another call; failures every set shares (credentials, throttling,
// the network) back off the whole source, callers already queued for a
// fetch included, and at most 32 STS calls run at once. No Token call waits
// longer than the fetch timeout (30 s, [WithFetchTimeout]), its wait for a
// fetch slot included. Minting tokens for sets the source does not hold is
// bounded by a token bucket ([WithMintRate]: 500 at once, then 10 a second),
// past which such a call fails at once with [ErrMintRateExceeded] while
// cached sets keep being served. [WithFallback] adds STS clients of other regions, asked in turn when
// a region fails (throttling, a 5xx, the network, a timeout), never when it
// answers about the request.
//
// A token's lifetime is read from its own iat and exp claims and counted from
// the local moment its fetch started, so a local clock that disagrees with
// STS's changes nothing; it never extends past the expiry of the AWS
// credentials that asked for it. When an upstream answers 401, [Transport]
// drops that token ([TokenSource.Invalidate]) and sends the request once more
// with a fresh one.
//
// # Failures and their fixes
//
// Every error of [TokenSource.Token] is a *[TokenError]; [Explain] says what
// it means (the STS error code, or a code such as [CodeNoCredentials] for a
// failure STS did not answer) and how to fix it, and the source's own log
// line for a failed fetch carries the same code and fix. A [Token] says, in
// [Token.Shortened], why it lives less than the configured duration (the
// credentials' session ends sooner, or STS refused the longer one), and
// [LoadAWSConfig] reports where the AWS Region came from.
//
// # Safety
//
// A [Token] never prints, logs or marshals its JWT. Errors never hold one.
// [Transport] refuses to send tokens to link-local and instance-metadata
// addresses ([IsMetadataHost], and again after name resolution with
// [GuardDialControl]), to hosts outside its [AllowedHosts], across redirects
// that leave the original origin (scheme, host and port) or go from https to
// http, over plain http to non-loopback hosts when [Transport.RequireTLS] is
// set, and over plain http through a forward proxy ([GuardProxy]). A nil
// Transport.Base is a guarded clone of [net/http.DefaultTransport]
// ([NewGuardedTransport]).
//
// [TokenSource], [Transport], [PerRPCCredentials] and [AllowedHosts] are safe
// for concurrent use by multiple goroutines.
//
// Package [github.com/stsauth/stsauth/ststest] is an in-process STS emulator
// for tests and local development. Package
// [github.com/stsauth/stsauth/verify] is the receiving side: it verifies
// these tokens for the APIs that accept them.
package stsauth
