package verify

import (
	"errors"
	"fmt"

	jose "github.com/go-jose/go-jose/v4"
)

// AWSIssuerHostSuffix ends the host of every AWS account's issuer,
// https://<id>.tokens.sts.global.api.aws.
const AWSIssuerHostSuffix = ".tokens.sts.global.api.aws"

// Unverified is what a token says about itself, read without any check.
type Unverified struct {
	// Issuer is the iss claim.
	Issuer string
	// Algorithm is the JWS alg header, RS256 or ES384.
	Algorithm string
	// KeyID is the JWS kid header.
	KeyID string
}

// Inspect reads a token's issuer, signing algorithm and key id without
// verifying anything, so a tool can show them or pick the issuer to verify
// the token against (stsproxy doctor does). Never decide anything on them:
// only the Claims of [Verifier.Verify] are verified. It fails, as Verify
// would, with an error that wraps [ErrMalformed] or [ErrAlgorithm] and never
// quotes the token.
func Inspect(raw string) (Unverified, error) {
	if len(raw) > MaxTokenSize {
		return Unverified{}, newError(ErrMalformed, fmt.Sprintf("token is %d bytes, more than %d", len(raw), MaxTokenSize), nil)
	}
	if !compactJWSChars(raw) {
		return Unverified{}, newError(ErrMalformed, "token is not three base64url parts separated by dots", nil)
	}
	jws, err := jose.ParseSignedCompact(raw, signingAlgorithms)
	if err != nil {
		if _, ok := errors.AsType[*jose.ErrUnexpectedSignatureAlgorithm](err); ok {
			return Unverified{}, newError(ErrAlgorithm, "alg must be RS256 or ES384", nil)
		}
		return Unverified{}, newError(ErrMalformed, "not a compact JWS", nil)
	}
	w, err := decodeClaims(jws.UnsafePayloadWithoutVerification())
	if err != nil {
		return Unverified{}, newError(ErrMalformed, err.Error(), nil)
	}
	hdr := jws.Signatures[0].Header
	return Unverified{Issuer: w.Iss, Algorithm: hdr.Algorithm, KeyID: hdr.KeyID}, nil
}
