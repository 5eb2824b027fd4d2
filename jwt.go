package stsauth

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Bounds on what STS may answer. A real token is about 1 KiB, 3 KiB with
// the most tags STS allows; anything far larger is not a token to send.
const (
	// MaxTokenSize is the largest token, in bytes, a [TokenSource] accepts
	// from STS; a larger one is a fetch error and is not cached.
	MaxTokenSize = 16 << 10
	// maxResponseSize bounds the STS response body the SDK reads: the token
	// plus the XML around it.
	maxResponseSize = MaxTokenSize + 16<<10
)

// errResponseTooLarge is the read error of an STS response body past
// maxResponseSize.
var errResponseTooLarge = fmt.Errorf("STS response body exceeds %d bytes", maxResponseSize)

// checkCompactJWS reports whether jwt is a compact JWS and no more: three
// non-empty segments of the base64url alphabet without padding, separated by
// dots, at most MaxTokenSize bytes. Decoders skip CR and LF, so a token
// holding them would parse and then break the header it is put in; this check
// comes first. The error never quotes the token.
func checkCompactJWS(jwt string) error {
	if len(jwt) > MaxTokenSize {
		return fmt.Errorf("STS returned a token of %d bytes, more than %d", len(jwt), MaxTokenSize)
	}
	dots, segment := 0, 0
	for i := 0; i < len(jwt); i++ {
		switch c := jwt[i]; {
		case c == '.':
			if segment == 0 {
				return errNotCompactJWS
			}
			dots, segment = dots+1, 0
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
			segment++
		default:
			return errNotCompactJWS
		}
	}
	if dots != 2 || segment == 0 {
		return errNotCompactJWS
	}
	return nil
}

// errNotCompactJWS is the fetch error of a token that is not a compact JWS.
var errNotCompactJWS = errors.New("STS returned a token that is not a compact JWS (three base64url segments)")

// limitResponse is an STS option that caps the response body the SDK reads
// at maxResponseSize, so a broken or hostile endpoint cannot make the
// process buffer a huge body. It applies to *sts.Client; other clients ignore
// it.
func limitResponse(o *sts.Options) {
	base := o.HTTPClient
	if base == nil {
		base = http.DefaultClient
	}
	o.HTTPClient = limitedClient{base}
}

// limitedClient wraps each response body in a limitedBody.
type limitedClient struct{ base sts.HTTPClient }

func (c limitedClient) Do(req *http.Request) (*http.Response, error) {
	resp, err := c.base.Do(req)
	if resp != nil && resp.Body != nil {
		resp.Body = &limitedBody{rc: resp.Body, left: maxResponseSize}
	}
	return resp, err
}

// limitedBody fails reads past its limit with errResponseTooLarge instead
// of returning the rest of the body.
type limitedBody struct {
	rc   io.ReadCloser
	left int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// One more byte tells a body of exactly the limit from a longer one.
		var one [1]byte
		n, err := b.rc.Read(one[:])
		if n > 0 {
			return 0, errResponseTooLarge
		}
		return 0, err
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *limitedBody) Close() error { return b.rc.Close() }

// signatureAlgorithms are the JWS algorithms STS signs with.
var signatureAlgorithms = []jose.SignatureAlgorithm{jose.RS256, jose.ES384}

// tokenLifetime returns how long a token STS just returned lives, by its own
// claims rather than by anyone's clock: exp − iat, capped by the requested
// duration and by expiration − iat (STS's Expiration, read in the clock
// that stamped iat). The signature is not checked: it is not ours to verify,
// and the token came from STS over TLS. The error never quotes the token.
func tokenLifetime(token string, expiration time.Time, requested time.Duration) (time.Duration, error) {
	if err := checkCompactJWS(token); err != nil {
		return 0, err
	}
	parsed, err := jwt.ParseSigned(token, signatureAlgorithms)
	if err != nil {
		return 0, errors.New("STS returned a token that is not a JWS signed with RS256 or ES384")
	}
	var c jwt.Claims
	if err := parsed.UnsafeClaimsWithoutVerification(&c); err != nil {
		return 0, errors.New("STS returned a token whose claims are not a JSON object of JWT claims")
	}
	if c.IssuedAt == nil || c.Expiry == nil {
		return 0, errors.New("STS returned a token without iat and exp claims")
	}
	iat, exp := c.IssuedAt.Time(), c.Expiry.Time()
	lifetime := min(exp.Sub(iat), expiration.Sub(iat), requested)
	if lifetime <= 0 {
		return 0, fmt.Errorf("STS returned a token with no lifetime (iat %v, exp %v, Expiration %v)",
			iat.UTC().Format(time.RFC3339), exp.UTC().Format(time.RFC3339), expiration.UTC().Format(time.RFC3339))
	}
	return lifetime, nil
}
