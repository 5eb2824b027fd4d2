package ststest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Signing algorithms accepted in the SigningAlgorithm parameter.
const (
	algRS256 = "RS256"
	algES384 = "ES384"
)

// signingKeys holds the two key pairs a Server signs with in one key
// generation, as go-jose signers and as the public JWKs it publishes.
type signingKeys struct {
	rs256, es384  jose.Signer
	rsaJWK, ecJWK jose.JSONWebKey // public halves
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
// publishes it, the RSA key has no alg member. Signing and the JWK encoding
// are go-jose's: the emulator hand-writes no JOSE.
func newSigningKeys(n int) *signingKeys {
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic("ststest: generate RSA key: " + err.Error())
	}
	ek, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		panic("ststest: generate ECDSA key: " + err.Error())
	}
	k := &signingKeys{
		rsaJWK: jose.JSONWebKey{Key: &rk.PublicKey, KeyID: "RSA_" + strconv.Itoa(n), Use: "sig"},
		ecJWK:  jose.JSONWebKey{Key: &ek.PublicKey, KeyID: "EC384_" + strconv.Itoa(n), Algorithm: algES384, Use: "sig"},
	}
	k.rs256 = newSigner(jose.RS256, rk, k.rsaJWK.KeyID)
	k.es384 = newSigner(jose.ES384, ek, k.ecJWK.KeyID)
	return k
}

// newSigner returns a go-jose signer that puts kid and typ JWT in the
// header, as STS does.
func newSigner(alg jose.SignatureAlgorithm, key any, kid string) jose.Signer {
	s, err := jose.NewSigner(
		jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: key, KeyID: kid}},
		(&jose.SignerOptions{}).WithType("JWT"),
	)
	if err != nil {
		panic("ststest: make " + string(alg) + " signer: " + err.Error())
	}
	return s
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
	keys := []jose.JSONWebKey{cur.rsaJWK, cur.ecJWK}
	if n > 0 {
		prev := keyGeneration(n - 1)
		keys = append(keys, prev.rsaJWK, prev.ecJWK)
	}
	doc, err := json.Marshal(jose.JSONWebKeySet{Keys: keys})
	if err != nil {
		panic("ststest: encode JWKS: " + err.Error())
	}
	return &keySet{generation: n, current: cur, jwks: doc}
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
	var signer jose.Signer
	switch alg {
	case algRS256:
		signer = k.rs256
	case algES384:
		signer = k.es384
	default:
		return "", fmt.Errorf("ststest: unsupported signing algorithm %q", alg)
	}
	token, err := jwt.Signed(signer).Claims(c).Serialize()
	if err != nil {
		return "", fmt.Errorf("ststest: sign JWT with %s: %w", alg, err)
	}
	return token, nil
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
