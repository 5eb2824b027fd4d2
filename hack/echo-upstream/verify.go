package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Limits of the verifier's fetches.
const (
	fetchTimeout = 5 * time.Second
	maxDocBytes  = 1 << 20
	// refetchAfter is how long after a JWKS fetch an unknown kid may
	// trigger another, so a rotated key is picked up without letting every
	// bad token cause a fetch.
	refetchAfter = 10 * time.Second
)

// verifier checks the signature and expiry of JWTs whose issuer is a
// loopback URL, such as stsproxy's --local-sts emulator or ststest. It
// fetches <iss>/.well-known/openid-configuration and the jwks_uri it names
// (which must be loopback too), and caches the keys per issuer. It never
// fetches anything off loopback: URLs are checked before a request, and
// the dialer refuses any other address a name resolves to. It is safe for
// concurrent use.
type verifier struct {
	client *http.Client
	now    func() time.Time

	mu   sync.Mutex             // guards keys
	keys map[string]*issuerKeys // by issuer
}

// issuerKeys are the public keys of one issuer.
type issuerKeys struct {
	byKID   map[string]crypto.PublicKey
	fetched time.Time
}

// newVerifier returns a verifier whose HTTP client only reaches loopback
// addresses and follows no redirects.
func newVerifier() *verifier {
	d := &net.Dialer{Timeout: fetchTimeout, Control: loopbackOnly}
	tr := &http.Transport{DialContext: d.DialContext, Proxy: nil, MaxIdleConnsPerHost: 2, IdleConnTimeout: 30 * time.Second}
	return &verifier{
		client: &http.Client{
			Transport:     tr,
			Timeout:       fetchTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return errors.New("redirects are not followed") },
		},
		now:  time.Now,
		keys: make(map[string]*issuerKeys),
	}
}

// loopbackOnly is the dialer's Control hook: it refuses every address but
// loopback, whatever name led to it.
func loopbackOnly(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil || !ap.Addr().Unmap().IsLoopback() {
		return fmt.Errorf("echo-upstream: refusing to fetch keys from non-loopback address %s", address)
	}
	return nil
}

// checkLoopbackURL accepts an http or https URL, without user info, whose
// host is localhost or a loopback IP (127.0.0.0/8, ::1).
func checkLoopbackURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.User != nil || u.Host == "" {
		return nil, errors.New("not an http(s) URL")
	}
	host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	if host == "localhost" {
		return u, nil
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.Zone() == "" && ip.Unmap().IsLoopback() {
		return u, nil
	}
	return nil, errors.New("not a loopback URL")
}

// jwtParts are the decoded parts of a compact JWS.
type jwtParts struct {
	header       struct{ Alg, Kid string }
	claims       []byte // the decoded claims JSON
	signingInput string
	sig          []byte
}

// parseJWT splits and decodes a compact JWS.
func parseJWT(token string) (*jwtParts, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, errors.New("not a JWT")
	}
	h, err1 := base64.RawURLEncoding.DecodeString(parts[0])
	c, err2 := base64.RawURLEncoding.DecodeString(parts[1])
	sig, err3 := base64.RawURLEncoding.DecodeString(parts[2])
	if err := errors.Join(err1, err2, err3); err != nil {
		return nil, errors.New("not base64url")
	}
	p := &jwtParts{claims: c, signingInput: parts[0] + "." + parts[1], sig: sig}
	if json.Unmarshal(h, &p.header) != nil || !json.Valid(c) {
		return nil, errors.New("header or claims are not JSON")
	}
	return p, nil
}

// verify checks a token's signature against its issuer's keys and its exp
// claim. The error says why a token is not verified; it never holds the
// token.
func (v *verifier) verify(ctx context.Context, token string) error {
	p, err := parseJWT(token)
	if err != nil {
		return err
	}
	var claims struct {
		Iss string   `json:"iss"`
		Exp *float64 `json:"exp"`
	}
	if err := json.Unmarshal(p.claims, &claims); err != nil {
		return errors.New("claims are not a JSON object")
	}
	if claims.Iss == "" {
		return errors.New("no iss claim")
	}
	if _, err := checkLoopbackURL(claims.Iss); err != nil {
		return fmt.Errorf("issuer %q: %v; only loopback issuers are verified", claims.Iss, err)
	}
	if p.header.Alg != "RS256" && p.header.Alg != "ES384" {
		return fmt.Errorf("alg %q, want RS256 or ES384", p.header.Alg)
	}
	key, err := v.key(ctx, claims.Iss, p.header.Kid)
	if err != nil {
		return err
	}
	if err := checkSignature(p, key); err != nil {
		return err
	}
	if claims.Exp == nil {
		return errors.New("no exp claim")
	}
	if exp := time.Unix(int64(*claims.Exp), 0); !v.now().Before(exp) {
		return fmt.Errorf("expired at %s", exp.UTC().Format(time.RFC3339))
	}
	return nil
}

// checkSignature verifies p's signature with key, for p's alg.
func checkSignature(p *jwtParts, key crypto.PublicKey) error {
	switch p.header.Alg {
	case "RS256":
		pub, ok := key.(*rsa.PublicKey)
		if !ok {
			return errors.New("kid names a non-RSA key for RS256")
		}
		sum := sha256.Sum256([]byte(p.signingInput))
		if rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], p.sig) != nil {
			return errors.New("bad signature")
		}
	case "ES384":
		pub, ok := key.(*ecdsa.PublicKey)
		if !ok || pub.Curve != elliptic.P384() {
			return errors.New("kid names a non-P-384 key for ES384")
		}
		if len(p.sig) != 96 {
			return errors.New("bad signature")
		}
		sum := sha512.Sum384([]byte(p.signingInput))
		r, s := new(big.Int).SetBytes(p.sig[:48]), new(big.Int).SetBytes(p.sig[48:])
		if !ecdsa.Verify(pub, sum[:], r, s) {
			return errors.New("bad signature")
		}
	}
	return nil
}

// key returns the issuer's key for kid, fetching the issuer's keys if they
// are not cached, or if kid is unknown and the last fetch is old enough.
func (v *verifier) key(ctx context.Context, iss, kid string) (crypto.PublicKey, error) {
	v.mu.Lock()
	ik := v.keys[iss]
	v.mu.Unlock()
	if ik != nil {
		if k, ok := ik.byKID[kid]; ok {
			return k, nil
		}
		if v.now().Sub(ik.fetched) < refetchAfter {
			return nil, fmt.Errorf("no key with kid %q", kid)
		}
	}
	// Two requests may fetch at once; the later result wins. Fine for a
	// development tool.
	byKID, err := v.fetchKeys(ctx, iss)
	if err != nil {
		return nil, err
	}
	v.mu.Lock()
	v.keys[iss] = &issuerKeys{byKID: byKID, fetched: v.now()}
	v.mu.Unlock()
	if k, ok := byKID[kid]; ok {
		return k, nil
	}
	return nil, fmt.Errorf("no key with kid %q", kid)
}

// fetchKeys reads the issuer's discovery document and its JWKS.
func (v *verifier) fetchKeys(ctx context.Context, iss string) (map[string]crypto.PublicKey, error) {
	var disc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := v.getJSON(ctx, strings.TrimSuffix(iss, "/")+"/.well-known/openid-configuration", &disc); err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	if disc.Issuer != iss {
		return nil, fmt.Errorf("discovery names issuer %q, want %q", disc.Issuer, iss)
	}
	if _, err := checkLoopbackURL(disc.JWKSURI); err != nil {
		return nil, fmt.Errorf("jwks_uri %q: %v", disc.JWKSURI, err)
	}
	var set struct {
		Keys []struct {
			Kty, Kid, Crv, N, E, X, Y string
		} `json:"keys"`
	}
	if err := v.getJSON(ctx, disc.JWKSURI, &set); err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	b64 := base64.RawURLEncoding.DecodeString
	keys := make(map[string]crypto.PublicKey, len(set.Keys))
	for _, k := range set.Keys {
		switch k.Kty {
		case "RSA":
			n, err1 := b64(k.N)
			e, err2 := b64(k.E)
			if err1 != nil || err2 != nil || len(e) == 0 || len(e) > 4 {
				continue
			}
			keys[k.Kid] = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
		case "EC":
			x, err1 := b64(k.X)
			y, err2 := b64(k.Y)
			if k.Crv != "P-384" || err1 != nil || err2 != nil || len(x) != 48 || len(y) != 48 {
				continue
			}
			pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P384(), append(append([]byte{4}, x...), y...))
			if err != nil {
				continue
			}
			keys[k.Kid] = pub
		}
	}
	return keys, nil
}

// getJSON GETs a loopback URL and decodes its JSON body.
func (v *verifier) getJSON(ctx context.Context, rawURL string, dst any) error {
	if _, err := checkLoopbackURL(rawURL); err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return err
	}
	res, err := v.client.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %d", rawURL, res.StatusCode)
	}
	if err := json.NewDecoder(io.LimitReader(res.Body, maxDocBytes)).Decode(dst); err != nil {
		return fmt.Errorf("%s: %v", rawURL, err)
	}
	return nil
}
