package stsauth

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"syscall"
	"time"
)

// GuardDialControl is a [net.Dialer] Control function that refuses to
// connect to an address [IsMetadataHost] refuses, whatever name led to it:
// it runs after name resolution, just before connect, so a DNS name that
// resolves to 169.254.169.254 is refused too. The error wraps
// [ErrHostNotAllowed]. [Transport] uses it when its Base is nil; add it to a
// base transport of your own:
//
//	d := &net.Dialer{Timeout: 30 * time.Second, Control: stsauth.GuardDialControl}
//	base := &http.Transport{DialContext: d.DialContext}
//
// Through a forward proxy the dialer connects to the proxy, not the
// upstream, so only the proxy's address is checked there.
func GuardDialControl(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return nil // not an IP address and port: nothing to check
	}
	if isMetadataAddr(ap.Addr()) {
		return fmt.Errorf("stsauth: %w: refusing to connect to link-local or instance metadata address %s", ErrHostNotAllowed, ap.Addr())
	}
	return nil
}

// GuardProxy wraps an [http.Transport] Proxy function (such as
// [http.ProxyFromEnvironment]) so that a request over plain http is never
// sent through a forward proxy: such a request, token included, would reach
// the forward proxy in clear text. It fails instead, with an error wrapping
// [ErrCleartext] that names the forward proxy's host (never its
// credentials). Requests over https go through the proxy as before, in a
// CONNECT tunnel the proxy cannot read. A nil proxy uses no forward proxy.
//
// Plain http to an upstream that a proxy function skips (loopback
// addresses, hosts in NO_PROXY) is unaffected.
func GuardProxy(proxy func(*http.Request) (*url.URL, error)) func(*http.Request) (*url.URL, error) {
	return func(req *http.Request) (*url.URL, error) {
		if proxy == nil {
			return nil, nil
		}
		u, err := proxy(req)
		if err != nil || u == nil || isHTTPS(req.URL.Scheme) {
			return u, err
		}
		return nil, fmt.Errorf("stsauth: %w: refusing to send plain http to %s through forward proxy %s; use https, or exclude the host from the forward proxy with NO_PROXY",
			ErrCleartext, req.URL.Host, u.Host)
	}
}

// NewGuardedTransport returns a clone of [http.DefaultTransport] (or, if
// that is not an [*http.Transport], a transport with the same settings)
// whose dialer refuses metadata addresses ([GuardDialControl]) and whose
// forward proxy function refuses plain http ([GuardProxy]). The dialer has
// the default's 30 s connect timeout and keep-alive. [Transport] with a nil
// Base uses one such transport, created on first use and shared.
func NewGuardedTransport() *http.Transport {
	t, ok := http.DefaultTransport.(*http.Transport)
	if ok {
		t = t.Clone()
	} else {
		t = &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          100,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ExpectContinueTimeout: time.Second,
		}
	}
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second, Control: GuardDialControl}
	t.DialContext = d.DialContext
	t.Proxy = GuardProxy(t.Proxy)
	return t
}

// defaultBase is the base RoundTripper of a Transport whose Base is nil.
var defaultBase = sync.OnceValue(func() http.RoundTripper { return NewGuardedTransport() })
