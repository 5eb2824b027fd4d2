package ststest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"strconv"
	"sync"
)

// Signing algorithms accepted in the SigningAlgorithm parameter.
const (
	algRS256 = "RS256"
	algES384 = "ES384"
)

// es384Size is the size in bytes of each of r and s in an ES384 signature.
const es384Size = 48

// signingKeys holds the two key pairs a Server signs with in one key
// generation.
type signingKeys struct {
	rsa    *rsa.PrivateKey
	rsaKID string
	rsaJWK jwk
	ec     *ecdsa.PrivateKey
	ecKID  string
	ecJWK  jwk
}

// Key generations shared by every Server in the process.
//
// Generating an RSA 2048 key takes long under the race detector, so the keys
// of each generation are generated once per process and shared. That is fine
// for a test fake: servers are told apart by their issuer URL, not by their
// keys.
var (
	generationsMu sync.Mutex     // guards generations
	generations   []*signingKeys // by generation number
)

// keyGeneration returns the signing keys of generation n, generating the
// missing generations up to n.
func keyGeneration(n int) *signingKeys {
	generationsMu.Lock()
	defer generationsMu.Unlock()
	for len(generations) <= n {
		generations = append(generations, newSigningKeys(len(generations)))
	}
	return generations[n]
}

// newSigningKeys generates the key pairs of generation n. Their key IDs have
// the shape of the ones AWS publishes, RSA_<n> and EC384_<n>, and, as AWS
// publishes it, the RSA key has no alg member.
func newSigningKeys(n int) *signingKeys {
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic("ststest: generate RSA key: " + err.Error())
	}
	ek, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		panic("ststest: generate ECDSA key: " + err.Error())
	}
	point, err := ek.PublicKey.Bytes() // 0x04 || X || Y
	if err != nil || len(point) != 1+2*es384Size {
		panic(fmt.Sprintf("ststest: encode ECDSA public key: %v", err))
	}
	k := &signingKeys{
		rsa:    rk,
		rsaKID: "RSA_" + strconv.Itoa(n),
		ec:     ek,
		ecKID:  "EC384_" + strconv.Itoa(n),
	}
	k.rsaJWK = jwk{
		Kty: "RSA",
		Kid: k.rsaKID,
		Use: "sig",
		N:   b64(rk.N.Bytes()),
		E:   b64(big.NewInt(int64(rk.E)).Bytes()),
	}
	k.ecJWK = jwk{
		Kty: "EC",
		Kid: k.ecKID,
		Alg: algES384,
		Use: "sig",
		Crv: "P-384",
		X:   b64(point[1 : 1+es384Size]),
		Y:   b64(point[1+es384Size:]),
	}
	return k
}

// keySet is what a Server signs with and publishes: the current generation
// and the JWKS document with its public keys followed by those of the
// previous generation, if any.
type keySet struct {
	generation int
	current    *signingKeys
	jwks       []byte
}

// newKeySet returns the key set of generation n.
func newKeySet(n int) *keySet {
	cur := keyGeneration(n)
	keys := []jwk{cur.rsaJWK, cur.ecJWK}
	if n > 0 {
		prev := keyGeneration(n - 1)
		keys = append(keys, prev.rsaJWK, prev.ecJWK)
	}
	doc, err := json.Marshal(struct {
		Keys []jwk `json:"keys"`
	}{keys})
	if err != nil {
		panic("ststest: encode JWKS: " + err.Error())
	}
	return &keySet{generation: n, current: cur, jwks: doc}
}

// jwk is one JSON Web Key (RFC 7517) in the JWKS document.
type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Alg string `json:"alg,omitempty"`
	Use string `json:"use"`
	N   string `json:"n,omitempty"`
	E   string `json:"e,omitempty"`
	Crv string `json:"crv,omitempty"`
	X   string `json:"x,omitempty"`
	Y   string `json:"y,omitempty"`
}

// b64 is unpadded base64url, as JOSE requires.
func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// jwtHeader is the JOSE header of a minted token.
type jwtHeader struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
	Typ string `json:"typ"`
}

// claims is the payload of a minted token, modelled on the tokens real STS
// returns from GetWebIdentityToken.
type claims struct {
	Iss string    `json:"iss"`
	Sub string    `json:"sub"`
	Aud any       `json:"aud"` // a string for one audience, else []string in request order
	Iat int64     `json:"iat"`
	Exp int64     `json:"exp"`
	Jti string    `json:"jti"`
	AWS awsClaims `json:"https://sts.amazonaws.com/"`
}

// awsClaims are the AWS-specific claims under the "https://sts.amazonaws.com/"
// namespace. Request tags are custom claims under request_tags, as real STS
// does.
//
// original_session_exp (the expiry of the calling session, an RFC 3339
// string) belongs here too; it is set with the session-expiry emulation.
type awsClaims struct {
	AWSAccount          string            `json:"aws_account"`
	SourceRegion        string            `json:"source_region"`
	PrincipalID         string            `json:"principal_id"`
	OrgID               string            `json:"org_id"`
	OUPath              []string          `json:"ou_path"`
	IdentityStoreUserID string            `json:"identity_store_user_id,omitempty"`
	OriginalSessionExp  string            `json:"original_session_exp,omitempty"`
	RequestTags         map[string]string `json:"request_tags,omitempty"`
}

// sign returns the compact JWS serialization of c signed with alg.
func (k *signingKeys) sign(alg string, c *claims) (string, error) {
	h := jwtHeader{Alg: alg, Typ: "JWT"}
	switch alg {
	case algRS256:
		h.Kid = k.rsaKID
	case algES384:
		h.Kid = k.ecKID
	default:
		return "", fmt.Errorf("ststest: unsupported signing algorithm %q", alg)
	}
	hj, err := json.Marshal(h)
	if err != nil {
		return "", fmt.Errorf("ststest: encode JWT header: %w", err)
	}
	cj, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("ststest: encode JWT claims: %w", err)
	}
	signingInput := b64(hj) + "." + b64(cj)
	var sig []byte
	switch alg {
	case algRS256:
		sum := sha256.Sum256([]byte(signingInput))
		sig, err = rsa.SignPKCS1v15(rand.Reader, k.rsa, crypto.SHA256, sum[:])
	case algES384:
		sum := sha512.Sum384([]byte(signingInput))
		var r, s *big.Int
		r, s, err = ecdsa.Sign(rand.Reader, k.ec, sum[:])
		if err == nil {
			sig = make([]byte, 2*es384Size)
			r.FillBytes(sig[:es384Size])
			s.FillBytes(sig[es384Size:])
		}
	}
	if err != nil {
		return "", fmt.Errorf("ststest: sign JWT with %s: %w", alg, err)
	}
	return signingInput + "." + b64(sig), nil
}

// newID returns a random RFC 4122 version 4 UUID, used for request IDs and
// the jti claim.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never returns an error
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
