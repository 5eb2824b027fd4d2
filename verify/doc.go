// Package verify verifies AWS outbound identity federation tokens: the JWTs
// that AWS STS GetWebIdentityToken mints and that stsauth sends. It is the
// receiving side, for the APIs that accept those tokens.
//
//	v, err := verify.New(verify.Config{
//		Issuers:   []verify.Issuer{{URL: "https://<id>.tokens.sts.global.api.aws", Account: "123456789012"}},
//		Audiences: []string{"https://api.example.com"},
//		Policy:    verify.Policy{OrgIDs: []string{"o-a1b2c3d4e5"}},
//	})
//	...
//	if err := v.Prime(ctx); err != nil { ... } // fetch keys at startup
//	http.Handle("/", v.Middleware(handler))   // or v.Verify(ctx, rawJWT)
//
// and in the handler:
//
//	claims, ok := verify.ClaimsFromContext(r.Context())
//	// claims.AWS.Account, claims.AWS.OrgID, claims.AWS.OUPath, claims.AWS.PrincipalID ...
//
// # Trust
//
// Trust is configured, never derived from a token. Each account has its own
// issuer, https://<id>.tokens.sts.global.api.aws (there is no
// organization-wide one); list each, optionally bound to its account, so
// that iss and the aws_account claim must agree. Only RS256 and ES384 are
// accepted, with a key of the matching type; exp and iat are required and
// checked with a leeway (30 s by default), and exp - iat may not exceed an
// hour. Keys come only from the issuer's own discovery document and JWKS:
// the jku, x5u, x5c and jwk header fields are never followed. [Policy]
// restricts callers by account, organization, OU path and principal ARN,
// and routes by request tags (which the caller chooses: never authorize on
// them); an optional replay guard refuses a jti seen before.
//
// # Keys
//
// Keys are fetched from <iss>/.well-known/openid-configuration (whose
// jwks_uri must be on the issuer's own origin) and cached per issuer. One
// fetch per issuer runs at a time and every waiting request shares it; it
// runs detached from the request's context, under its own timeout
// ([Config.FetchTimeout]), reads at most [MaxDocumentSize] bytes and
// follows no redirect. Cached keys are refreshed in the background after
// the JWKS response's Cache-Control max-age, kept between 1 minute and 24
// hours (1 hour without one), with "Cache-Control: no-cache" on the
// request; if a refresh fails the cached keys stay in use and the refresh is
// retried after [Config.RefetchCooldown]. A token with an
// unknown kid causes at most one fetch per [Config.RefetchCooldown] (30 s)
// per issuer, whichever kids the tokens name; inside the cooldown it fails
// at once rather than waiting. Once the cooldown has passed, an unknown kid
// always refetches, even one a fetch did not find before: AWS's kids are
// predictable (RSA_0, then RSA_1), and remembering a miss would let a forged
// token naming the next kid delay the issuer's key rotation. After a
// rotation, real tokens are refused for at most the cooldown.
// [Verifier.Prime] fetches every issuer's keys at startup, and
// [Verifier.Ready] reports whether they are all in, for a readiness probe.
//
// # A token is checked once
//
// A sender reuses one token for up to an hour, so a receiver sees the same
// string many times. A Verifier remembers the tokens that passed (up to
// [Config.TokenCacheSize], 4096 by default; a negative size turns this
// off) by the SHA-256 of the whole token, never the token itself, so only
// a token identical in every byte is answered from memory, without parsing
// or a signature check. Each such answer still checks exp (with the
// leeway), iat and nbf against the clock, that the key that signed the
// token is still in the issuer's key set (once a refresh or rotation has
// removed the key, the token's next use drops it from memory, verifies it
// anew and refuses it), and applies [Policy] and the replay guard as to a new token. The
// [Claims] of a remembered token share their slices, maps and Raw between
// calls: treat them as read-only.
//
// # Results
//
// Errors are [*Error] values matching one sentinel each ([ErrExpired],
// [ErrAudience], [ErrUntrustedIssuer], [ErrSignature], [ErrPolicy],
// [ErrReplay] and so on), and never contain the token. [Reason] names an
// error's reason class for metrics and logs. A server that answers refusals
// itself, such as a proxy, verifies a request with [Verifier.VerifyRequest]
// and answers a failure with [WriteError], as [Verifier.Middleware] does:
// 401 with an RFC 6750 WWW-Authenticate header, 403 for a policy refusal,
// 503 without keys, and a JSON body naming the reason class. The verifier counts
// verifications by result, key fetches by issuer and result, and tokens
// the replay guard had to forget before they expired, with OpenTelemetry
// metrics.
//
// A [Verifier] is safe for concurrent use by multiple goroutines.
//
// In tests, [github.com/stsauth/stsauth/ststest] mints real tokens with real
// claims; trust its URL with [Config.AllowInsecureLoopbackIssuers].
package verify
