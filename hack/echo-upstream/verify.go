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
	"syscall"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/stsauth/stsauth/verify"
)

// fetchTimeout bounds each fetch of the issuer's discovery document and keys.
const fetchTimeout = 5 * time.Second

// errNoIssuer is the verdict on every token when no -issuer was given.
var errNoIssuer = errors.New("not verified: start echo-upstream with -issuer URL (the issuer stsproxy --local-sts logs) to verify tokens")

// verifier checks JWTs from the one issuer it was told to trust (-issuer), a
// loopback URL such as stsproxy's --local-sts emulator or ststest, with
// package verify: signature (RS256 or ES384, keys from
// <iss>/.well-known/openid-configuration and its JWKS), exp, iat and
// lifetime. It accepts any audience: it is a development upstream that shows
// what arrived. A token naming another issuer is not verified, and nothing
// it names is fetched. It never fetches anything off loopback: the issuer is
// checked at startup, package verify keeps jwks_uri on the issuer's origin,
// and the dialer refuses any other address a name resolves to. It is safe
// for concurrent use.
type verifier struct {
	client *http.Client
	issuer string           // the trusted issuer; empty verifies nothing
	v      *verify.Verifier // nil when issuer is empty
}

// loopbackTransport returns the transport the verifier fetches keys with: it
// dials only loopback addresses and never uses a forward proxy.
func loopbackTransport() *http.Transport {
	d := &net.Dialer{Timeout: fetchTimeout, Control: loopbackOnly}
	return &http.Transport{DialContext: d.DialContext, Proxy: nil, MaxIdleConnsPerHost: 2, IdleConnTimeout: 30 * time.Second}
}

// newVerifier returns a verifier that trusts issuer, which must be empty
// (verify nothing) or a loopback http(s) URL, and fetches its keys through
// rt, [loopbackTransport] outside tests (package verify follows no
// redirects).
func newVerifier(issuer string, rt http.RoundTripper) (*verifier, error) {
	vr := &verifier{client: &http.Client{Transport: rt, Timeout: fetchTimeout}, issuer: issuer}
	if issuer == "" {
		return vr, nil
	}
	if _, err := checkLoopbackURL(issuer); err != nil {
		return nil, fmt.Errorf("issuer %q: %v; only a loopback issuer can be verified", issuer, err)
	}
	v, err := verify.New(verify.Config{
		Issuers:                      []verify.Issuer{{URL: issuer}},
		SkipAudienceCheck:            true, // the audience is the proxy's choice; shown, not checked
		AllowInsecureLoopbackIssuers: true,
		HTTPClient:                   vr.client,
		FetchTimeout:                 fetchTimeout,
		Logger:                       slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return nil, err
	}
	vr.v = v
	return vr, nil
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

// verify checks token against the trusted issuer's keys. The error says why
// a token is not verified; it never holds the token.
func (v *verifier) verify(ctx context.Context, token string) error {
	if v.v == nil {
		return errNoIssuer
	}
	iss, err := issuerOf(token)
	if err != nil {
		return err
	}
	if iss != v.issuer {
		return fmt.Errorf("issuer %q is not the trusted issuer %q (-issuer)", iss, v.issuer)
	}
	_, err = v.v.Verify(ctx, token)
	return err
}

// issuerOf reads the iss claim of a token without verifying it, to refuse a
// token from another issuer before anything is fetched.
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
