package stsauth

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestGuardDialControl calls the dialer hook directly, so a broken check
// cannot send a packet off loopback.
func TestGuardDialControl(t *testing.T) {
	t.Parallel()
	for _, a := range []string{"169.254.169.254:80", "[fd00:ec2::254]:80", "[fd00:ec2::23]:80", "[fe80::1%eth0]:443", "[::ffff:169.254.1.1]:80"} {
		assert.ErrorIs(t, GuardDialControl("tcp4", a, nil), ErrHostNotAllowed, a)
	}
	for _, a := range []string{"127.0.0.1:80", "[::1]:443", "10.0.0.1:8080", "/run/sock"} {
		assert.NoError(t, GuardDialControl("tcp", a, nil), a)
	}
}

func TestGuardProxy(t *testing.T) {
	t.Parallel()
	fwd := &url.URL{Scheme: "http", User: url.UserPassword("u", "secret-password"), Host: "proxy.example:3128"}
	guarded := GuardProxy(http.ProxyURL(fwd))

	u, err := guarded(httptest.NewRequest(http.MethodGet, "https://api.example.com/", nil))
	require.NoError(t, err)
	assert.Equal(t, fwd, u, "https goes through the forward proxy, tunnelled")

	_, err = guarded(httptest.NewRequest(http.MethodGet, "http://api.example.com/", nil))
	require.ErrorIs(t, err, ErrCleartext)
	assert.Contains(t, err.Error(), "proxy.example:3128")
	assert.NotContains(t, err.Error(), "secret-password")

	u, err = GuardProxy(func(*http.Request) (*url.URL, error) { return nil, nil })(httptest.NewRequest(http.MethodGet, "http://api.example.com/", nil))
	assert.NoError(t, err)
	assert.Nil(t, u, "no forward proxy for this host: plain http is the caller's choice")
	u, err = GuardProxy(nil)(httptest.NewRequest(http.MethodGet, "http://api.example.com/", nil))
	assert.NoError(t, err)
	assert.Nil(t, u)
}

// TestTransportNeverSendsTokenThroughForwardProxyInClearText points a base
// transport at a real forward proxy on loopback: a plain http request must
// not reach it.
func TestTransportNeverSendsTokenThroughForwardProxyInClearText(t *testing.T) {
	var hits atomic.Int32
	fwd := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer fwd.Close()
	fwdURL, err := url.Parse(fwd.URL)
	require.NoError(t, err)
	base := &http.Transport{Proxy: GuardProxy(http.ProxyURL(fwdURL))}
	defer base.CloseIdleConnections()

	ts, _, _ := newTestSource(t)
	tr := &Transport{Source: ts, Audience: FixedAudience(apiAudience), Base: base}
	body := newBody()
	_, err = tr.RoundTrip(httptest.NewRequest(http.MethodPost, "http://api.example.com/", body))
	require.ErrorIs(t, err, ErrCleartext)
	assert.True(t, body.closed.Load())
	assert.Zero(t, hits.Load(), "the forward proxy saw nothing")
}

func TestTransportNilBaseIsGuardedAndShared(t *testing.T) {
	t.Parallel()
	a, b := (&Transport{}).base(), (&Transport{}).base()
	require.Same(t, a, b, "created once, not per request")
	ht, ok := a.(*http.Transport)
	require.True(t, ok)
	assert.NotSame(t, http.DefaultTransport, ht, "a clone; http.DefaultTransport is never changed")
	_, err := ht.DialContext(context.Background(), "tcp", "169.254.169.254:80")
	assert.ErrorIs(t, err, ErrHostNotAllowed, "the dialer refuses metadata addresses")
	require.NotNil(t, ht.Proxy, "the forward proxy function is kept, guarded")
	// https may go through a forward proxy, if the environment names one:
	// no error either way. (Plain http through one is GuardProxy's test.)
	_, err = ht.Proxy(httptest.NewRequest(http.MethodGet, "https://api.example.com/", nil))
	assert.NoError(t, err)
}
