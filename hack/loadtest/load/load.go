// Package load is a closed-loop HTTP load generator for loopback benchmarks.
//
// Each of [Config.Conns] workers sends one request, reads the whole
// response, and sends the next, over one shared keep-alive
// [http.Transport]. A run is always bounded: by [Config.Duration], by
// [Config.Requests], or by both, whichever comes first, and neither may
// exceed [MaxDuration] or [MaxRequests]. Every connection goes to a
// loopback address (127.0.0.0/8 or ::1); [Config.Validate] rejects other
// targets and the dialer refuses them.
//
// Latency percentiles are exact, computed from every recorded sample (see
// [Summarize]).
package load

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Hard limits on a run, so that no invocation can load a machine for long.
const (
	// MaxRequests is the largest allowed [Config.Requests].
	MaxRequests = 5_000_000
	// MaxDuration is the longest allowed [Config.Duration].
	MaxDuration = 5 * time.Minute
	// MaxConns is the largest allowed [Config.Conns].
	MaxConns = 5000
	// DefaultTimeout is the per-request timeout when [Config.Timeout] is 0.
	DefaultTimeout = 10 * time.Second
)

// Config describes one run.
type Config struct {
	// URL is the target, http://host:port/path; host must be a loopback IP
	// address or "localhost".
	URL string
	// Conns is the number of concurrent workers, 1 to [MaxConns].
	Conns int
	// Duration bounds the run in time; 0 means no time bound. Workers stop
	// starting requests once it has passed. At most [MaxDuration].
	Duration time.Duration
	// Requests bounds the run in requests; 0 means no count bound. At most
	// [MaxRequests]. At least one of Duration and Requests must be set.
	Requests int64
	// Header is added to every request. Its Host entry, if any, sets the
	// request's Host line.
	Header http.Header
	// HostHeader names the header set from Hosts. It is used only when
	// Hosts is not empty.
	HostHeader string
	// Hosts, if not empty, gives request i the header HostHeader:
	// Hosts[i%len(Hosts)].
	Hosts []string
	// Interval is the width of the timeline buckets of [Result.Timeline];
	// 0 means no timeline.
	Interval time.Duration
	// Timeout is the per-request timeout, including reading the body. If 0,
	// [DefaultTimeout] is used.
	Timeout time.Duration
	// Transport sends the requests. If nil, a transport from [NewTransport]
	// is used and its idle connections are closed at the end of the run.
	Transport http.RoundTripper
	// OnStart, if not nil, is called once when the workers are released.
	OnStart func(start time.Time)
}

// Validate reports the first problem with c, naming the field at fault.
func (c *Config) Validate() error {
	if c.URL == "" {
		return errors.New("load: URL is required")
	}
	if err := CheckLoopbackURL(c.URL); err != nil {
		return err
	}
	switch {
	case c.Conns < 1 || c.Conns > MaxConns:
		return fmt.Errorf("load: Conns %d: want 1 to %d", c.Conns, MaxConns)
	case c.Duration == 0 && c.Requests == 0:
		return errors.New("load: set Duration, Requests or both; an unbounded run is not allowed")
	case c.Duration < 0 || c.Duration > MaxDuration:
		return fmt.Errorf("load: Duration %v: want 0 to %v", c.Duration, MaxDuration)
	case c.Requests < 0 || c.Requests > MaxRequests:
		return fmt.Errorf("load: Requests %d: want 0 to %d", c.Requests, MaxRequests)
	case c.Interval < 0:
		return fmt.Errorf("load: Interval %v: want 0 or more", c.Interval)
	case c.Timeout < 0:
		return fmt.Errorf("load: Timeout %v: want 0 or more", c.Timeout)
	case len(c.Hosts) > 0 && c.HostHeader == "":
		return errors.New("load: HostHeader is required with Hosts")
	}
	return nil
}

// CheckLoopbackURL reports an error unless raw is an http or https URL whose
// host is a loopback IP address or "localhost".
func CheckLoopbackURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("load: URL %q: %w", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("load: URL %q: scheme must be http or https", raw)
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	a, err := netip.ParseAddr(host)
	if err != nil || !a.IsLoopback() {
		return fmt.Errorf("load: URL %q: host must be a loopback address (127.0.0.0/8, ::1 or localhost)", raw)
	}
	return nil
}

// NewTransport returns a keep-alive transport for conns workers whose dialer
// refuses any address that is not loopback.
func NewTransport(conns int) *http.Transport {
	d := &net.Dialer{
		Timeout:   5 * time.Second,
		KeepAlive: 30 * time.Second,
		Control: func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil || !ap.Addr().Unmap().IsLoopback() {
				return fmt.Errorf("load: refusing to connect to non-loopback address %s", address)
			}
			return nil
		},
	}
	return &http.Transport{
		Proxy:               nil, // never an environment proxy
		DialContext:         d.DialContext,
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
}

// Result is the outcome of a run.
type Result struct {
	Start   time.Time
	Elapsed time.Duration
	// Total counts the requests sent, answered or not.
	Total int64
	// Status counts responses by status code.
	Status map[int]int64
	// TransportErrors counts requests that got no complete response, by
	// error class ("timeout", "refused", "reset", "eof", "other").
	TransportErrors map[string]int64
	// Latency summarises every request, successful or not.
	Latency Summary
	// OKLatency summarises the requests answered with a 2xx status;
	// ErrLatency all others, transport errors included.
	OKLatency, ErrLatency Summary
	// Timeline holds one bucket per Interval, by request start time.
	Timeline []Bucket
	// Interval is the width of the Timeline buckets, 0 if there are none.
	Interval time.Duration

	samples [][]sample // every request, by worker
}

// Bucket summarises the requests that started in [Offset, Offset+Interval)
// from the start of the run.
type Bucket struct {
	Offset time.Duration
	Summary
	Errors int64 // not 2xx, or no response
}

// RPS returns the completed requests per second over the run.
func (r *Result) RPS() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Total) / r.Elapsed.Seconds()
}

// Errors returns the number of requests that were not answered with 2xx.
func (r *Result) Errors() int64 {
	var n int64
	for code, c := range r.Status {
		if code < 200 || code > 299 {
			n += c
		}
	}
	for _, c := range r.TransportErrors {
		n += c
	}
	return n
}

// sample is one request. 16 bytes, so MaxRequests samples fit in 80 MB.
type sample struct {
	latency time.Duration
	startMs uint32 // start, in ms since the start of the run
	status  int16  // status code; 0 for a transport error
	errIdx  int16  // index into errClasses when status is 0
}

var errClasses = []string{"timeout", "refused", "reset", "eof", "other"}

func classify(err error) int16 {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, context.DeadlineExceeded):
		return 0
	case errors.Is(err, syscall.ECONNREFUSED):
		return 1
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return 2
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return 3
	}
	return 4
}

// Run performs the run described by cfg and returns its result. It returns
// early, with the samples so far, if ctx is cancelled. Errors of individual
// requests are counted in the result, not returned.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	rt := cfg.Transport
	if rt == nil {
		tr := NewTransport(cfg.Conns)
		defer tr.CloseIdleConnections()
		rt = tr
	}
	client := &http.Client{
		Transport: rt,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	hostLine := cfg.Header.Get("Host")

	var next atomic.Int64
	per := make([][]sample, cfg.Conns)
	release := make(chan struct{})
	var wg sync.WaitGroup
	var start time.Time
	var deadline time.Time
	for w := range cfg.Conns {
		wg.Go(func() {
			<-release
			buf := make([]sample, 0, 1024)
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if cfg.Requests > 0 && i >= cfg.Requests {
					break
				}
				t0 := time.Now()
				if cfg.Duration > 0 && !t0.Before(deadline) {
					break
				}
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, cfg.URL, nil)
				if err != nil {
					break // cannot happen: the URL was validated
				}
				for k, vs := range cfg.Header {
					req.Header[k] = vs
				}
				if hostLine != "" {
					req.Host = hostLine
				}
				if len(cfg.Hosts) > 0 {
					req.Header.Set(cfg.HostHeader, cfg.Hosts[i%int64(len(cfg.Hosts))])
				}
				buf = append(buf, do(client, req, timeout, t0, start))
			}
			per[w] = buf
		})
	}
	start = time.Now()
	if cfg.Duration > 0 {
		deadline = start.Add(cfg.Duration)
	}
	if cfg.OnStart != nil {
		cfg.OnStart(start)
	}
	close(release)
	wg.Wait()
	elapsed := time.Since(start)
	return aggregate(per, start, elapsed, cfg.Interval), ctx.Err()
}

// do sends req and reads its body, within timeout.
func do(client *http.Client, req *http.Request, timeout time.Duration, t0, start time.Time) sample {
	ctx, cancel := context.WithTimeout(req.Context(), timeout)
	defer cancel()
	req = req.WithContext(ctx)
	s := sample{startMs: uint32(t0.Sub(start) / time.Millisecond)}
	resp, err := client.Do(req)
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil {
			s.status = int16(resp.StatusCode)
		}
	}
	if err != nil {
		s.status, s.errIdx = 0, classify(err)
	}
	s.latency = time.Since(t0)
	return s
}

func aggregate(per [][]sample, start time.Time, elapsed, interval time.Duration) *Result {
	r := &Result{
		Start:           start,
		Elapsed:         elapsed,
		Status:          make(map[int]int64),
		TransportErrors: make(map[string]int64),
		samples:         per,
		Interval:        interval,
	}
	var n int
	for _, b := range per {
		n += len(b)
	}
	all := make([]time.Duration, 0, n)
	var ok, bad []time.Duration
	var buckets [][]time.Duration
	var bucketErrs []int64
	for _, b := range per {
		for _, s := range b {
			all = append(all, s.latency)
			failed := s.status < 200 || s.status > 299
			if s.status == 0 {
				r.TransportErrors[errClasses[s.errIdx]]++
			} else {
				r.Status[int(s.status)]++
			}
			if failed {
				bad = append(bad, s.latency)
			} else {
				ok = append(ok, s.latency)
			}
			if interval > 0 {
				i := int(time.Duration(s.startMs) * time.Millisecond / interval)
				for len(buckets) <= i {
					buckets = append(buckets, nil)
					bucketErrs = append(bucketErrs, 0)
				}
				buckets[i] = append(buckets[i], s.latency)
				if failed {
					bucketErrs[i]++
				}
			}
		}
	}
	r.Total = int64(n)
	r.Latency = Summarize(all)
	r.OKLatency = Summarize(ok)
	r.ErrLatency = Summarize(bad)
	for i, b := range buckets {
		r.Timeline = append(r.Timeline, Bucket{
			Offset:  time.Duration(i) * interval,
			Summary: Summarize(b),
			Errors:  bucketErrs[i],
		})
	}
	return r
}

// Select summarises the requests whose start, measured from the start of
// the run, satisfies keep.
func (r *Result) Select(keep func(start time.Duration) bool) Summary {
	var lat []time.Duration
	for _, b := range r.samples {
		for _, s := range b {
			if keep(time.Duration(s.startMs) * time.Millisecond) {
				lat = append(lat, s.latency)
			}
		}
	}
	return Summarize(lat)
}
