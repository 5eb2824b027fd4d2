package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/stsauth/stsauth"
	"github.com/stsauth/stsauth/verify"
)

// maxIdleConnsPerHost is how many idle connections to one upstream are
// kept for reuse; --upstream-idle-conns bounds them in all, which matters
// when header routing spreads traffic over many hosts.
const maxIdleConnsPerHost = 64

// Response bodies of the errors the proxy itself answers (http.Error adds
// the newline). They are fixed strings so no upstream or token detail ever
// reaches the client.
const (
	bodyTokenUnavailable = "token unavailable"
	bodyMintRateExceeded = "token mint rate exceeded"
	bodyBadGateway       = "bad gateway"
	bodyGatewayTimeout   = "gateway timeout"
)

// requestState carries per-request facts from ServeHTTP to the Rewrite,
// ModifyResponse and ErrorHandler hooks of the ReverseProxy, which see only
// the request. It is the forwarded request's context itself, and holds the
// request's statusWriter, so that the per-request bookkeeping costs one
// allocation, not three.
type requestState struct {
	// Context is the incoming request's context; Value answers stateKey
	// with the state and passes every other key on. Set by forward.
	context.Context
	rw statusWriter // the ResponseWriter handed to the handler

	target   string // upstream host[:port]
	status   int    // status of the upstream response, set by ModifyResponse
	tracked  bool   // came through forwarder.serve, which ends the upgrade count
	upgraded bool   // counted in forwarder.upgrades

	// Set by stsproxy inbound, for the access log: the verification's
	// reason class ("ok" when the token verified) and the caller's
	// principal_id. Never the token.
	auth      string
	principal string
	claims    *verify.Claims // the verified claims, for the identity headers
}

// stateKey is the context key of the *requestState.
type stateKey struct{}

// Value returns the state for stateKey and asks the request's context for
// any other key.
func (st *requestState) Value(key any) any {
	if _, ok := key.(stateKey); ok {
		return st
	}
	return st.Context.Value(key)
}

// stateFrom returns the request's state, or a throwaway one if the
// request did not come through ServeHTTP, so hooks never see nil.
func stateFrom(ctx context.Context) *requestState {
	st, _ := ctx.Value(stateKey{}).(*requestState)
	if st == nil {
		return &requestState{}
	}
	return st
}

// forwarder is what the server modes share to forward a request: a
// ReverseProxy that streams, passes protocol upgrades through and maps
// upstream failures to 502 and 504, the request metrics, the access log and
// the count of upgraded connections. The outbound proxy and stsproxy inbound
// each wrap one. It is safe for concurrent use.
type forwarder struct {
	log         *slog.Logger
	rp          *httputil.ReverseProxy
	metrics     *proxyMetrics
	accessLog   bool         // one info record per request
	accessLogTo *slog.Logger // where those records go: log, or log through asyncAccessLog
	tokenErrLog *logThrottle // "token unavailable" records, at most one a second
	mintLog     *logThrottle // "token mint rate exceeded" records, at most one a second
	// mintRetryAfter is the Retry-After, in whole seconds, of the 503 for
	// a request refused by the mint rate; set by the outbound proxy.
	mintRetryAfter string

	// upgrades counts upgraded (e.g. WebSocket) connections in flight.
	// http.Server.Shutdown does not wait for them, since they are hijacked;
	// the server waits on this instead.
	upgrades sync.WaitGroup
}

// newForwarder returns a forwarder whose ReverseProxy rewrites requests
// with rewrite and sends them through rt.
func newForwarder(rewrite func(*httputil.ProxyRequest), rt http.RoundTripper, log *slog.Logger, m *proxyMetrics, accessLog bool) *forwarder {
	f := &forwarder{log: log, metrics: m, accessLog: accessLog, accessLogTo: log,
		tokenErrLog: &logThrottle{interval: time.Second, now: time.Now},
		mintLog:     &logThrottle{interval: time.Second, now: time.Now}}
	f.rp = &httputil.ReverseProxy{
		Rewrite:   rewrite,
		Transport: rt,
		// Zero, not -1: ReverseProxy already flushes every write of an
		// event stream or a body of unknown length (chunked), which is
		// what streaming needs, while a body of known length goes out in
		// as few writes as possible. -1 doubled the write syscalls of
		// every response.
		FlushInterval:  0,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ModifyResponse: f.modifyResponse,
		ErrorHandler:   f.errorHandler,
		BufferPool:     copyBuffers{},
	}
	return f
}

// proxy is the outbound proxy handler: it picks the upstream for each
// request, checks it, and forwards through a ReverseProxy whose transport
// attaches the token. It is safe for concurrent use.
type proxy struct {
	*forwarder
	cfg     *config
	viaName string // this instance's pseudonym in Via, "stsproxy-<8 hex>"
	via     string // the Via value added to outbound requests
	// viaOnly is []string{via} with no spare capacity, set as the Via of
	// a request that has none: shared by every request, since an append
	// to a full slice copies it and nothing writes header values in place.
	viaOnly []string
	// fixedURL is the upstream URL with --upstream-host, which rewrite
	// then needs not build per request; nil with header routing.
	fixedURL *url.URL
}

// forwardedProto holds the X-Forwarded-Proto values, shared like viaOnly.
var forwardedProto = [2][]string{{"http"}, {"https"}}

// newBaseTransport returns the transport that carries requests to upstreams:
// the library's guarded clone of [http.DefaultTransport] (never modified
// itself), whose dialer refuses link-local and instance metadata addresses,
// so a host name that resolves to 169.254.169.254 cannot reach IMDS either,
// and which never sends plain http through a forward proxy; with the
// response-header timeout and more idle connections.
func newBaseTransport(cfg *config) *http.Transport {
	base := stsauth.NewGuardedTransport()
	base.ResponseHeaderTimeout = cfg.upstreamTimeout
	// A proxy sends most of its traffic to few hosts, often one. The
	// default of 2 idle connections per host made every burst above 2
	// concurrent requests dial anew and leave sockets in TIME_WAIT.
	// Each idle connection holds two goroutines and 8 KiB of buffers, about
	// 25 KiB in all: header routing over many hosts kept 256 of them
	// (6 MiB) before --upstream-idle-conns bounded them.
	idle := cfg.upstreamIdle
	if idle < 1 {
		idle = defaultUpstreamIdleConns // stsproxy inbound has no flag
	}
	base.MaxIdleConns = idle
	base.MaxIdleConnsPerHost = min(maxIdleConnsPerHost, idle)
	return base
}

// newProxy returns the proxy handler, sending through rt (which attaches the
// token).
func newProxy(cfg *config, rt http.RoundTripper, log *slog.Logger, m *proxyMetrics) *proxy {
	p := &proxy{cfg: cfg, viaName: newViaName()}
	p.via = "1.1 " + p.viaName
	p.viaOnly = []string{p.via}
	if cfg.upstreamHost != "" {
		p.fixedURL = &url.URL{Scheme: cfg.upstreamScheme, Host: cfg.upstreamHost}
	}
	p.forwarder = newForwarder(p.rewrite, rt, log, m, cfg.accessLog)
	p.mintRetryAfter = mintRetryAfter(cfg.mintRate)
	return p
}

// mintRetryAfter returns the Retry-After of a request refused by the mint
// rate: the whole seconds until the budget has one more mint, at least 1.
func mintRetryAfter(rate float64) string {
	if rate <= 0 {
		return "1"
	}
	return strconv.FormatFloat(max(1, math.Ceil(1/rate)), 'f', 0, 64)
}

// rewrite points the outbound request at the chosen upstream. ReverseProxy
// has already removed hop-by-hop and X-Forwarded-* headers from pr.Out.
func (p *proxy) rewrite(pr *httputil.ProxyRequest) {
	st := stateFrom(pr.In.Context())
	// Keep appending to the client's X-Forwarded-For, as the proxy we
	// replace did; SetXForwarded appends the client address to it.
	pr.Out.Header["X-Forwarded-For"] = pr.In.Header["X-Forwarded-For"]
	u := p.fixedURL
	if u == nil || u.Host != st.target {
		u = &url.URL{Scheme: p.cfg.upstreamScheme, Host: st.target}
	}
	pr.SetURL(u)
	setXForwarded(pr)
	if p.cfg.hostHeader != hostHeaderRequestLine {
		pr.Out.Header.Del(p.cfg.hostHeader)
	}
	// Mark the request as having passed through this instance, appending
	// to any Via the client sent, so a request that comes back is caught.
	if _, ok := pr.Out.Header["Via"]; ok {
		pr.Out.Header.Add("Via", p.via)
	} else {
		pr.Out.Header["Via"] = p.viaOnly[:1:1]
	}
	// A client's Authorization never reaches the upstream, nor its value of
	// the header that carries the token (which the transport sets). Log
	// that it happened, never the value.
	for _, name := range [...]string{"Authorization", p.cfg.tokenHeader} {
		if _, ok := pr.Out.Header[name]; ok {
			p.log.Debug("removing an inbound token header", "header", name, "target", st.target)
			pr.Out.Header.Del(name)
		}
	}
}

// setXForwarded does what [httputil.ProxyRequest.SetXForwarded] does, with
// one allocation where it makes three: X-Forwarded-Proto comes from the
// shared forwardedProto slices, and X-Forwarded-For and X-Forwarded-Host
// share one array (each a full slice of it, so an append copies). It
// appends the client's IP to X-Forwarded-For (or removes the header if the
// remote address has none) and sets X-Forwarded-Host to the inbound Host.
func setXForwarded(pr *httputil.ProxyRequest) {
	vals := make([]string, 2)
	vals[1] = pr.In.Host
	if clientIP, _, err := net.SplitHostPort(pr.In.RemoteAddr); err == nil {
		if prior := pr.Out.Header["X-Forwarded-For"]; len(prior) > 0 {
			clientIP = strings.Join(prior, ", ") + ", " + clientIP
		}
		vals[0] = clientIP
		pr.Out.Header["X-Forwarded-For"] = vals[0:1:1]
	} else {
		delete(pr.Out.Header, "X-Forwarded-For")
	}
	pr.Out.Header["X-Forwarded-Host"] = vals[1:2:2]
	proto := forwardedProto[0]
	if pr.In.TLS != nil {
		proto = forwardedProto[1]
	}
	pr.Out.Header["X-Forwarded-Proto"] = proto[:1:1]
}

// modifyResponse records the upstream status for the access log, which
// otherwise cannot see a 101 written on a hijacked connection.
func (f *forwarder) modifyResponse(res *http.Response) error {
	st := stateFrom(res.Request.Context())
	if res.StatusCode < 100 {
		// http.ResponseWriter panics on such a code; the error handler
		// answers 502 instead.
		return &badStatusError{code: res.StatusCode}
	}
	st.status = res.StatusCode
	if res.StatusCode == http.StatusSwitchingProtocols && st.tracked {
		// ServeHTTP returns, and calls Done, when the upgraded
		// connection closes.
		st.upgraded = true
		f.upgrades.Add(1)
	}
	return nil
}

// errorHandler maps a failed round trip to the proxy's own response: 503
// "token mint rate exceeded" with Retry-After when the mint budget refused a
// token for a host not cached, 502 "token unavailable" when no token could
// be had otherwise (the request was not sent in either case),
// 403 when the library refused the host or to send the token in clear text,
// 502 for an upstream status code below 100, 504 when the upstream sent no
// headers in time, and 502 otherwise.
func (f *forwarder) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	st := stateFrom(r.Context())
	var tokErr *stsauth.TokenError
	var netErr net.Error
	var badStatus *badStatusError
	switch {
	case errors.Is(err, stsauth.ErrMintRateExceeded):
		if ok, suppressed := f.mintLog.allow(); ok {
			f.log.Warn("token mint rate exceeded: refused a token for an upstream whose token is not cached; raise --token-mint-rate/--token-mint-burst if this load is expected",
				"target", st.target, "suppressed", suppressed)
		}
		w.Header().Set("Retry-After", f.mintRetryAfter)
		http.Error(w, bodyMintRateExceeded, http.StatusServiceUnavailable)
	case errors.As(err, &tokErr):
		if ok, suppressed := f.tokenErrLog.allow(); ok {
			x := stsauth.Explain(err)
			f.log.Error("token unavailable", "target", st.target, "error", err.Error(), "code", x.Code, "fix", x.Fix, "suppressed", suppressed)
		}
		http.Error(w, bodyTokenUnavailable, http.StatusBadGateway)
	case errors.As(err, &badStatus):
		f.log.Warn("upstream answered an invalid status code", "target", st.target, "status", badStatus.code)
		http.Error(w, bodyBadGateway, http.StatusBadGateway)
	case errors.Is(err, stsauth.ErrCleartext):
		f.log.Warn("refusing to send a token in clear text", "target", st.target, "error", err.Error())
		http.Error(w, fmt.Sprintf("refusing to send a token to upstream host %q in clear text", st.target), http.StatusForbidden)
	case errors.Is(err, stsauth.ErrHostNotAllowed):
		f.log.Warn("upstream host not allowed", "target", st.target, "error", err.Error())
		http.Error(w, fmt.Sprintf("upstream host %q is not allowed", st.target), http.StatusForbidden)
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// The client went away; nobody reads this response.
		f.log.Debug("client cancelled request", "target", st.target)
		w.WriteHeader(http.StatusBadGateway)
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &netErr) && netErr.Timeout():
		f.log.Warn("upstream timeout", "target", st.target, "error", err.Error())
		http.Error(w, bodyGatewayTimeout, http.StatusGatewayTimeout)
	default:
		f.log.Warn("upstream request failed", "target", st.target, "error", err.Error())
		http.Error(w, bodyBadGateway, http.StatusBadGateway)
	}
}

// badStatusError is an upstream status code below 100, which no
// ResponseWriter accepts.
type badStatusError struct{ code int }

// Error names the code.
func (e *badStatusError) Error() string {
	return fmt.Sprintf("stsproxy: upstream status code %d, want 100 to 999", e.code)
}

// serve handles one request with handle, inside the bookkeeping every
// server mode shares: the in-flight and duration metrics, the end of an
// upgraded connection, and the access log record. handle either answers
// itself or calls [forwarder.forward].
func (f *forwarder) serve(w http.ResponseWriter, r *http.Request, handle func(w http.ResponseWriter, r *http.Request, st *requestState)) {
	start := time.Now()
	ctx := r.Context()
	f.metrics.serverStart(ctx)
	st := &requestState{tracked: true}
	st.rw.ResponseWriter = w
	rw := &st.rw
	defer func() {
		if st.upgraded {
			f.upgrades.Done()
		}
		status := rw.status
		if status == 0 {
			status = st.status // a 101 is written on the hijacked connection
		}
		if status == 0 {
			status = http.StatusOK
		}
		elapsed := time.Since(start)
		f.metrics.serverEnd(ctx, r.Method, status, elapsed)
		if !f.accessLog {
			return
		}
		attrs := []slog.Attr{
			slog.String("method", r.Method),
			slog.String("path", r.URL.Path),
			slog.String("target", st.target),
			slog.Int("status", status),
			slog.Float64("duration_ms", float64(elapsed.Microseconds())/1000),
		}
		if st.auth != "" {
			attrs = append(attrs, slog.String("auth", st.auth))
		}
		if st.principal != "" {
			attrs = append(attrs, slog.String("principal", st.principal))
		}
		f.accessLogTo.LogAttrs(r.Context(), slog.LevelInfo, "request", attrs...)
	}()
	handle(rw, r, st)
}

// asyncAccessLog sends the access log through an [asyncHandler] from now
// on, so no request waits on its write; call it before serving. With out
// (where cfg's logs go) the records are formatted as newLogger does and
// written to out in batches ([batchWriter]); with a nil out they go through
// f.log's handler one by one. stop writes what is queued; call it once
// serving has ended.
func (f *forwarder) asyncAccessLog(cfg *config, out io.Writer) (stop func()) {
	next, idle := f.log.Handler(), func() {}
	if out != nil {
		bw := &batchWriter{out: out}
		next, idle = newLogger(cfg, bw).Handler(), bw.Flush
	}
	h, stop := newAsyncHandler(next, idle)
	f.accessLogTo = slog.New(h)
	return stop
}

// forward sends r to the upstream through the ReverseProxy, with st for its
// hooks.
func (f *forwarder) forward(w http.ResponseWriter, r *http.Request, st *requestState) {
	st.Context = r.Context()
	f.rp.ServeHTTP(w, r.WithContext(st))
}

// ServeHTTP routes, checks and forwards one request, and writes its access
// log record.
func (p *proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.serve(w, r, p.routeAndForward)
}

// routeAndForward refuses a request that loops or names an upstream it may
// not reach, and forwards the rest.
func (p *proxy) routeAndForward(w http.ResponseWriter, r *http.Request, st *requestState) {
	if p.seenBefore(r) {
		p.log.Warn("loop detected: request already passed through this proxy", "via", p.viaName)
		http.Error(w, "loop detected: the request already passed through this proxy (Via: "+p.via+")", http.StatusLoopDetected)
		return
	}
	target, status, msg := p.route(r)
	st.target = target
	if status != 0 {
		http.Error(w, msg, status)
		return
	}
	p.forward(w, r, st)
}

// route returns the upstream host[:port] for r, or a client error status
// and message.
func (p *proxy) route(r *http.Request) (target string, status int, msg string) {
	if p.cfg.upstreamHost != "" {
		return p.cfg.upstreamHost, 0, ""
	}
	name := p.cfg.hostHeader
	var host string
	if p.cfg.routeByRequestHost() {
		host = r.Host
		if host == "" {
			return "", http.StatusBadRequest, "missing Host header"
		}
	} else {
		vals := r.Header.Values(name)
		switch len(vals) {
		case 0:
			return "", http.StatusBadRequest, "missing " + name + " header"
		case 1:
			host = vals[0]
		default:
			return "", http.StatusBadRequest, "more than one " + name + " header"
		}
		if host == "" {
			return "", http.StatusBadRequest, "missing " + name + " header"
		}
	}
	bare, _, err := stsauth.ParseHostPort(host)
	if err != nil {
		return "", http.StatusBadRequest, "invalid " + name + " header: " + err.Error()
	}
	host = strings.ToLower(host)
	if isSelf(r, host) {
		p.log.Warn("loop detected: upstream host is this proxy", "target", host)
		return host, http.StatusLoopDetected, "loop detected: " + name + " names this proxy's own address; set it to the upstream host"
	}
	if stsauth.IsMetadataHost(bare) {
		return host, http.StatusForbidden, fmt.Sprintf("upstream host %q is a link-local or instance metadata address", host)
	}
	if p.cfg.allowed != nil && !p.cfg.allowed.AllowsURLHost(p.cfg.upstreamScheme, host) {
		return host, http.StatusForbidden, fmt.Sprintf("upstream host %q is not allowed", host)
	}
	return host, 0, ""
}

// newViaName returns a random pseudonym for this proxy instance, used as
// the received-by part of its Via entries (RFC 9110, section 7.6.3). It is
// per instance so that a chain of distinct proxies is not taken for a loop.
func newViaName() string {
	var b [4]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never returns an error
	return "stsproxy-" + hex.EncodeToString(b[:])
}

// seenBefore reports whether r already carries this instance's Via entry,
// that is, it left this proxy once and came back: a forwarding loop.
func (p *proxy) seenBefore(r *http.Request) bool {
	for _, v := range r.Header.Values("Via") {
		for entry := range strings.SplitSeq(v, ",") {
			f := strings.Fields(entry) // "1.1 stsproxy-0a1b2c3d (comment)"
			if len(f) >= 2 && f[1] == p.viaName {
				return true
			}
		}
	}
	return false
}

// isSelf reports whether host[:port] (already validated) names the address
// the request arrived on, so forwarding to it would loop: the same port as
// the connection's local address (the scheme's default port when host has
// none), on "localhost", a loopback or unspecified IP, or the local IP
// itself. Other names of this machine are caught on the second pass by
// [proxy.seenBefore].
func isSelf(r *http.Request, hostport string) bool {
	local, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return false
	}
	self, err := netip.ParseAddrPort(local.String())
	if err != nil {
		return false
	}
	host, port, err := stsauth.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if port == "" {
		port = "80"
		if r.TLS != nil {
			port = "443"
		}
	}
	if port != strconv.Itoa(int(self.Port())) {
		return false
	}
	host = strings.TrimSuffix(host, ".")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	ip = ip.Unmap()
	return ip.IsLoopback() || ip.IsUnspecified() || ip == self.Addr().Unmap()
}

// copyBuffers lends ReverseProxy the buffers it copies response bodies
// through. Without a pool it allocates 32 KiB per response, which at a few
// thousand requests a second is most of the proxy's garbage.
type copyBuffers struct{}

// copyBufferSize is the size ReverseProxy allocates when it has no pool.
const copyBufferSize = 32 << 10

var copyBufferPool = sync.Pool{New: func() any { return new([copyBufferSize]byte) }}

// Get returns a buffer of copyBufferSize bytes.
func (copyBuffers) Get() []byte { return copyBufferPool.Get().(*[copyBufferSize]byte)[:] }

// Put returns a buffer from Get to the pool.
func (copyBuffers) Put(b []byte) {
	if cap(b) == copyBufferSize {
		copyBufferPool.Put((*[copyBufferSize]byte)(b[:copyBufferSize]))
	}
}

// statusWriter records the status written to a ResponseWriter. Unwrap lets
// [http.ResponseController] reach Flush and Hijack on the original, which
// streaming and protocol upgrades need.
type statusWriter struct {
	http.ResponseWriter
	status int
}

// WriteHeader records the first final status and passes it on.
func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

// Write records an implicit 200 and passes the bytes on.
func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Flush lets ReverseProxy flush streamed responses immediately.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap returns the original ResponseWriter for [http.ResponseController].
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
