// Package benchnet holds the loopback-only servers the benchmark programs
// share: a minimal upstream and a listener that accepts loopback peers only.
package benchnet

import (
	"bytes"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"
)

// Upstream returns a handler that answers every request with 200 and a
// fixed body of n bytes, discarding the request body.
func Upstream(n int) http.Handler {
	body := bytes.Repeat([]byte("x"), max(n, 0))
	size := strconv.Itoa(len(body))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["Content-Type"] = []string{"text/plain"}
		h["Content-Length"] = []string{size}
		w.WriteHeader(http.StatusOK)
		w.Write(body)
	})
}

// NewServer returns an http.Server for h with the house timeouts.
func NewServer(h http.Handler) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 60 * time.Second}
}

// ListenAnyLoopback listens on 0.0.0.0:port (tcp4) so that every address of
// 127.0.0.0/8 reaches it (on Linux a socket bound to 127.0.0.1 does not
// receive traffic for 127.0.0.2), and closes at once, unread, every
// connection whose local or remote address is not loopback. port 0 picks a
// free port.
func ListenAnyLoopback(port int) (net.Listener, error) {
	ln, err := net.Listen("tcp4", net.JoinHostPort("0.0.0.0", strconv.Itoa(port)))
	if err != nil {
		return nil, err
	}
	return &loopbackOnly{ln}, nil
}

// loopbackOnly drops connections that are not loopback at both ends.
type loopbackOnly struct{ net.Listener }

// Accept returns the next connection whose both ends are loopback
// addresses, closing any other.
func (l *loopbackOnly) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if isLoopback(c.LocalAddr()) && isLoopback(c.RemoteAddr()) {
			return c, nil
		}
		c.Close()
	}
}

func isLoopback(a net.Addr) bool {
	ap, err := netip.ParseAddrPort(a.String())
	return err == nil && ap.Addr().Unmap().IsLoopback()
}

// CheckLoopbackAddr reports an error unless addr is host:port with a
// loopback IP host.
func CheckLoopbackAddr(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	a, err := netip.ParseAddr(host)
	if err != nil || !a.IsLoopback() {
		return errors.New("address " + addr + " is not a loopback IP address")
	}
	return nil
}
