// Package ststest provides an in-process fake of AWS STS for testing.
//
// The fake speaks the AWS Query wire protocol of the STS GetWebIdentityToken
// action closely enough that a real [github.com/aws/aws-sdk-go-v2/service/sts.Client]
// can call it, and it mints real, verifiable JSON Web Tokens signed with RS256
// or ES384. It also serves an OpenID Connect discovery document and a JWKS
// document, so token verifiers can be tested end to end:
//
//	srv := ststest.NewServer()
//	defer srv.Close()
//	out, err := srv.Client().GetWebIdentityToken(ctx, &sts.GetWebIdentityTokenInput{
//		Audience:         []string{"https://api.example.com"},
//		SigningAlgorithm: aws.String("RS256"),
//	})
//
// The token's issuer (the iss claim) is [Server.URL]; its keys are published
// at [Server.JWKSURL] and at the jwks_uri of
// [Server.URL]/.well-known/openid-configuration.
//
// Tokens carry the claims real STS puts in web identity tokens, and no
// others:
//
//   - iss: [Server.URL].
//   - sub: the principal's ARN, [Server.PrincipalARN] (by default the role
//     arn:aws:iam::<account>:role/ststest).
//   - aud: a string for one audience, an array in request order for several.
//   - iat: the server's clock ([Server.Now]), in Unix seconds.
//   - exp: iat plus DurationSeconds (300 s by default), or the
//     [Server.SetTokenLifetime] override. The response's Expiration equals it.
//   - jti: a random UUID, unique per token.
//   - "https://sts.amazonaws.com/": an object with aws_account
//     ([Server.AccountID]), source_region ([Server.Region]), principal_id
//     (the same ARN as sub, as in real tokens), org_id ([Server.OrgID]),
//     ou_path (an array of path strings, [Server.OUPath]),
//     identity_store_user_id (only when [Server.IdentityStoreUserID] is set),
//     original_session_exp (the session's expiry in RFC 3339, only when
//     [Server.SetSessionExpiry] set one) and, only when the request has tags,
//     request_tags, a map of tag key to value.
//
// There is no nbf claim, as in real tokens. Every value has a default, so
// [NewServer] mints real-shaped tokens; set the fields on a server from
// [NewUnstartedServer] before [Server.Start] to change them.
//
// Faults are injected with [Server.FailNext], [Server.FailAll],
// [Server.SetLatency], [Server.Hold] and [Server.SetTokenLifetime], and are
// cleared with [Server.Reset]. [Server.SetThrottle] rate-limits calls as STS
// throttles an account, and [Server.SetSessionExpiry] makes the caller's
// credentials a session that tokens may not outlive. [Server.Calls] and
// [Server.CallsFor] report how many GetWebIdentityToken requests arrived.
//
// GetCallerIdentity is answered too ([Server.CallerARN]), with its own fault
// switch, [Server.FailCallerIdentity], so setup checks can be tested.
//
// For verifiers: the JWKS has AWS's shape (key IDs RSA_<n> and EC384_<n>, no
// alg on the RSA key); [Server.Rotate] switches to new keys while keeping the
// previous ones published, [Server.SetJWKSStatus] takes discovery and the
// JWKS offline, and [Server.JWKSCalls] counts key fetches.
//
// For code that finds its Region or credentials on EC2: [NewIMDS] starts a
// fake of the instance metadata service on loopback (the instance's Region,
// its role's credentials, or silence), and [IMDS.Env] is the environment
// that points the AWS SDK at it and nowhere else, so a test never reaches
// the real 169.254.169.254.
//
// Like [net/http/httptest], the package takes no [testing.TB]: it works in
// runnable examples and in development binaries. Setup failures panic with a
// message prefixed "ststest:". All methods of [Server] are safe for
// concurrent use by multiple goroutines once the server is started.
package ststest
