// Command floorproxy is the floor for any header-injecting reverse proxy: a
// bare [httputil.ReverseProxy] (Rewrite, SetURL) to -upstream that sets a
// constant "Authorization: Bearer <constant>" header and does nothing else.
//
//	floorproxy -upstream http://127.0.0.1:PORT [-listen 127.0.0.1:0] [-max-idle-conns-per-host N] [-max-idle-conns N] [-buffer-pool] [-host-header NAME]
//
// Its transport is a clone of [http.DefaultTransport], as stsproxy's is, so
// the two differ only by the token machinery; -max-idle-conns-per-host
// raises the idle pool for a tuned floor. With -host-header it routes each
// request to the loopback host[:port] that header names, as stsproxy's
// header routing does (a request naming anything else gets 400), still
// setting the constant header: the floor of the header-routing scenarios.
// It logs one JSON record
// {"msg":"listening","addr":...} to stderr once it accepts connections.
// Loopback only: both -listen and -upstream must be loopback addresses.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// bearer is the constant header value: what a token-injecting proxy would
// add, with a JWT-sized payload so header bytes on the wire are comparable.
var bearer = "Bearer " + fixedJWT()

func fixedJWT() string {
	b := make([]byte, 900) // an RS256 STS web identity token is about 900 bytes
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return string(b)
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stderr))
}

func loopbackHost(host string) bool {
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// newProxy returns the floor proxy to target, or with a hostHeader to the
// host that header names.
func newProxy(target *url.URL, maxIdlePerHost, maxIdle int, pooled bool, hostHeader string) http.Handler {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if maxIdlePerHost > 0 {
		tr.MaxIdleConnsPerHost = maxIdlePerHost
		tr.MaxIdleConns = max(tr.MaxIdleConns, maxIdlePerHost)
	}
	if maxIdle > 0 {
		tr.MaxIdleConns = maxIdle
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			if hostHeader != "" {
				pr.SetURL(&url.URL{Scheme: target.Scheme, Host: pr.In.Header.Get(hostHeader)})
				pr.Out.Header.Del(hostHeader)
			} else {
				pr.SetURL(target)
			}
			pr.Out.Header["Authorization"] = []string{bearer}
		},
		Transport: tr,
	}
	if pooled {
		rp.BufferPool = bufferPool{}
	}
	if hostHeader == "" {
		return rp
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.Header.Get(hostHeader))
		if err != nil || !loopbackHost(host) {
			http.Error(w, "want "+hostHeader+": <loopback IP>:PORT", http.StatusBadRequest)
			return
		}
		rp.ServeHTTP(w, r)
	})
}

// bufferPool is a sync.Pool of ReverseProxy copy buffers, like stsproxy's.
type bufferPool struct{}

var buffers = sync.Pool{New: func() any { return new([32 << 10]byte) }}

// Get returns a 32 KiB buffer.
func (bufferPool) Get() []byte { return buffers.Get().(*[32 << 10]byte)[:] }

// Put returns a buffer from Get to the pool.
func (bufferPool) Put(b []byte) {
	if cap(b) == 32<<10 {
		buffers.Put((*[32 << 10]byte)(b[:32<<10]))
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("floorproxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:0", "loopback address to listen on")
	upstream := fs.String("upstream", "", "upstream base URL, http://127.0.0.1:PORT (required)")
	maxIdle := fs.Int("max-idle-conns-per-host", 0, "idle upstream connections kept per host; 0 keeps Go's default (2)")
	pooled := fs.Bool("buffer-pool", false, "copy response bodies through pooled buffers, as stsproxy does")
	maxIdleAll := fs.Int("max-idle-conns", 0, "idle upstream connections kept in all; 0 keeps Go's default (100)")
	hostHeader := fs.String("host-header", "", "route each request to the loopback host:port this header names, not to -upstream's host")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	target, err := url.Parse(*upstream)
	if err != nil || (target.Scheme != "http" && target.Scheme != "https") || !loopbackHost(target.Hostname()) {
		fmt.Fprintf(stderr, "floorproxy: -upstream %q: want http(s)://<loopback IP>:PORT\n", *upstream)
		return 2
	}
	host, _, err := net.SplitHostPort(*listen)
	if err != nil || !loopbackHost(host) {
		fmt.Fprintf(stderr, "floorproxy: -listen %q: want <loopback IP>:PORT\n", *listen)
		return 2
	}
	if *maxIdle < 0 || *maxIdleAll < 0 {
		fmt.Fprintln(stderr, "floorproxy: -max-idle-conns-per-host and -max-idle-conns: want 0 or more")
		return 2
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(stderr, "floorproxy: listen:", err)
		return 1
	}
	log := slog.New(slog.NewJSONHandler(stderr, nil))
	srv := &http.Server{
		Handler:           newProxy(target, *maxIdle, *maxIdleAll, *pooled, *hostHeader),
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       60 * time.Second,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("listening", "addr", ln.Addr().String(), "upstream", target.String())
	select {
	case <-ctx.Done():
	case err := <-errc:
		log.Error("serve", "error", err.Error())
		return 1
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	return 0
}
