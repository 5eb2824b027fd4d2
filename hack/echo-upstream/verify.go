package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/stsauth/stsauth/verify"
)

// Limits of the verifier.
const (
	fetchTimeout = 5 * time.Second
	// maxIssuers bounds how many loopback issuers get a verifier.
	maxIssuers = 64
)

// verifier checks JWTs whose issuer is a loopback URL, such as stsproxy's
// --local-sts emulator or ststest, with package verify: signature (RS256 or
// ES384, keys from <iss>/.well-known/openid-configuration and its JWKS),
// exp, iat and lifetime. Unlike a real API it trusts any loopback issuer a
// token names and accepts any audience: it is a development upstream that
// shows what arrived. It never fetches anything off loopback: issuers are
// checked before a verifier is made for them, package verify keeps jwks_uri
// on the issuer's origin, and the dialer refuses any other address a name
// resolves to. It is safe for concurrent use.
type verifier struct {
	client *http.Client

	mu       sync.Mutex                  // guards byIssuer
	byIssuer map[string]*verify.Verifier // by issuer URL
}

// newVerifier returns a verifier whose HTTP client only reaches loopback
// addresses (package verify follows no redirects).
func newVerifier() *verifier {
	d := &net.Dialer{Timeout: fetchTimeout, Control: loopbackOnly}
	tr := &http.Transport{DialContext: d.DialContext, Proxy: nil, MaxIdleConnsPerHost: 2, IdleConnTimeout: 30 * time.Second}
	return &verifier{
		client:   &http.Client{Transport: tr, Timeout: fetchTimeout},
		byIssuer: make(map[string]*verify.Verifier),
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

// verify checks token with the verifier of its loopback issuer. The error
// says why a token is not verified; it never holds the token.
func (v *verifier) verify(ctx context.Context, token string) error {
	iss, err := issuerOf(token)
	if err != nil {
		return err
	}
	if _, err := checkLoopbackURL(iss); err != nil {
		return fmt.Errorf("issuer %q: %v; only loopback issuers are verified", iss, err)
	}
	vf, err := v.verifierFor(iss)
	if err != nil {
		return err
	}
	_, err = vf.Verify(ctx, token)
	return err
}

// issuerOf reads the iss claim of a token without verifying it, only to
// pick the verifier that will.
func issuerOf(token string) (string, error) {
	jws, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.RS256, jose.ES384})
	if err != nil {
		return "", errors.New("not an RS256 or ES384 compact JWS")
	}
	var c struct {
		Iss string `json:"iss"`
	}
	if json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &c) != nil || c.Iss == "" {
		return "", errors.New("no iss claim")
	}
	return c.Iss, nil
}

// verifierFor returns the verifier of the loopback issuer iss, making it on
// first use.
func (v *verifier) verifierFor(iss string) (*verify.Verifier, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if vf, ok := v.byIssuer[iss]; ok {
		return vf, nil
	}
	if len(v.byIssuer) >= maxIssuers {
		return nil, fmt.Errorf("more than %d issuers seen; restart echo-upstream", maxIssuers)
	}
	vf, err := verify.New(verify.Config{
		Issuers:                      []verify.Issuer{{URL: iss}},
		SkipAudienceCheck:            true, // the audience is the proxy's choice; shown, not checked
		AllowInsecureLoopbackIssuers: true,
		HTTPClient:                   v.client,
		FetchTimeout:                 fetchTimeout,
		Logger:                       slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return nil, err
	}
	v.byIssuer[iss] = vf
	return vf, nil
}
