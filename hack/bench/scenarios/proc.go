package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/stsauth/stsauth/hack/bench/internal/benchnet"
)

// proxyProc is a running stsproxy child process.
type proxyProc struct {
	cmd         *exec.Cmd
	Addr        string // proxy listener, host:port
	MetricsAddr string // admin listener, host:port
	done        chan struct{}

	mu       sync.Mutex     // guards the fields below
	levels   map[string]int // log records by level
	messages map[string]int // warn and error records by msg
	gcLive   []string       // live heap after each GC, from GODEBUG=gctrace=1 lines
	pprof    string         // net/http/pprof host:port, from a binary built with -tags stsproxy_pprof
}

// stsEnv is the environment of an stsproxy that uses the AWS SDK default
// config against the emulator at stsURL. It is built from scratch, so no
// flag-shaped variable (UPSTREAM_HOST, ...) or AWS profile of the caller
// leaks in.
func stsEnv(stsURL string) []string {
	return []string{
		"AWS_ENDPOINT_URL_STS=" + stsURL,
		"AWS_REGION=us-east-1",
		"AWS_ACCESS_KEY_ID=x",
		"AWS_SECRET_ACCESS_KEY=y",
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONFIG_FILE=/dev/null",
		"AWS_SHARED_CREDENTIALS_FILE=/dev/null",
		"HOME=" + os.TempDir(),
	}
}

// startProxy starts bin with args and env and waits, at most 15 s, for its
// "listening" log record. The proxy is stopped when ctx is done or Stop is
// called.
func startProxy(ctx context.Context, bin string, args, env []string) (*proxyProc, error) {
	for _, a := range []string{"--listen-addr", "--metrics-listen-addr"} {
		if !hasLoopbackFlag(args, a) {
			return nil, fmt.Errorf("scenarios: stsproxy args need %s on a loopback address", a)
		}
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	p, addrs, err := launch(cmd, "stsproxy")
	if err != nil {
		return nil, err
	}
	p.Addr, p.MetricsAddr = addrs[0], addrs[1]
	for _, a := range []string{p.Addr, p.MetricsAddr} {
		if err := benchnet.CheckLoopbackAddr(a); err != nil {
			p.Stop()
			return nil, fmt.Errorf("scenarios: stsproxy: %w", err)
		}
	}
	return p, nil
}

// launch starts cmd, named name in errors, stopping it with SIGTERM when its
// context is done, and waits at most 15 s for its "listening" log record,
// whose listener and metrics addresses it returns.
func launch(cmd *exec.Cmd, name string) (*proxyProc, [2]string, error) {
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	setParentDeathSignal(cmd)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return nil, [2]string{}, fmt.Errorf("scenarios: start %s: %w", cmd.Path, err)
	}
	p := &proxyProc{cmd: cmd, done: make(chan struct{}), levels: map[string]int{}, messages: map[string]int{}}
	listening := make(chan [2]string, 1)
	go p.readLog(pr, listening)
	go func() {
		cmd.Wait()
		pw.Close()
		close(p.done)
	}()
	select {
	case a := <-listening:
		return p, a, nil
	case <-p.done:
		return nil, [2]string{}, fmt.Errorf("scenarios: %s exited before listening: %v", name, cmd.ProcessState)
	case <-time.After(15 * time.Second):
		p.Stop()
		return nil, [2]string{}, fmt.Errorf("scenarios: %s did not log \"listening\" within 15s", name)
	}
}

// startFloor starts the floorproxy binary bin routing by header to the
// loopback upstream, and waits, at most 15 s, for its "listening" record.
func startFloor(ctx context.Context, bin, upstream, hostHeader string) (*proxyProc, error) {
	cmd := exec.CommandContext(ctx, bin, "-listen", "127.0.0.1:0", "-upstream", "http://"+upstream,
		"-host-header", hostHeader, "-max-idle-conns-per-host", "64", "-max-idle-conns", "64", "-buffer-pool")
	cmd.Env = []string{"HOME=" + os.TempDir(), "GODEBUG=gctrace=1"}
	p, addrs, err := launch(cmd, "floorproxy")
	if err != nil {
		return nil, err
	}
	p.Addr = addrs[0]
	if err := benchnet.CheckLoopbackAddr(p.Addr); err != nil {
		p.Stop()
		return nil, fmt.Errorf("scenarios: floorproxy: %w", err)
	}
	return p, nil
}

func hasLoopbackFlag(args []string, name string) bool {
	for i, a := range args {
		v, ok := strings.CutPrefix(a, name+"=")
		if !ok && a == name && i+1 < len(args) {
			v, ok = args[i+1], true
		}
		if ok && benchnet.CheckLoopbackAddr(v) == nil {
			return true
		}
	}
	return false
}

// readLog consumes the proxy's JSON log, counting records by level and
// reporting the listening addresses once.
func (p *proxyProc) readLog(r io.Reader, listening chan<- [2]string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	sent := false
	for sc.Scan() {
		var rec struct {
			Level       string `json:"level"`
			Msg         string `json:"msg"`
			Addr        string `json:"addr"`
			MetricsAddr string `json:"metrics_addr"`
		}
		if json.Unmarshal(sc.Bytes(), &rec) != nil {
			if live, ok := gcLiveHeap(sc.Text()); ok {
				p.mu.Lock()
				p.gcLive = append(p.gcLive, live)
				p.mu.Unlock()
			}
			continue
		}
		p.mu.Lock()
		if rec.Msg == "pprof listening" && benchnet.CheckLoopbackAddr(rec.Addr) == nil {
			p.pprof = rec.Addr
		}
		p.levels[rec.Level]++
		if rec.Level == "WARN" || rec.Level == "ERROR" {
			p.messages[rec.Msg]++
		}
		p.mu.Unlock()
		if rec.Msg == "listening" && !sent {
			listening <- [2]string{rec.Addr, rec.MetricsAddr}
			sent = true
		}
	}
	io.Copy(io.Discard, r)
}

// gcLiveHeap extracts the live heap after GC, "C MB", from a gctrace line:
// "gc 7 @0.1s 1%: ... ms cpu, 4->5->2 MB, 5 MB goal, ...".
func gcLiveHeap(line string) (string, bool) {
	if !strings.HasPrefix(line, "gc ") {
		return "", false
	}
	for f := range strings.SplitSeq(line, ", ") {
		if mb, ok := strings.CutSuffix(f, " MB"); ok && strings.Count(mb, "->") == 2 {
			return mb[strings.LastIndex(mb, "->")+2:], true
		}
	}
	return "", false
}

// GCLive returns the live heap sizes in MB after each GC seen so far.
func (p *proxyProc) GCLive() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.gcLive)
}

// LogSummary returns "level:count" and the warn/error messages seen.
func (p *proxyProc) LogSummary() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var b strings.Builder
	for _, l := range []string{"INFO", "WARN", "ERROR"} {
		fmt.Fprintf(&b, "%s:%d ", strings.ToLower(l), p.levels[l])
	}
	for m, n := range p.messages {
		fmt.Fprintf(&b, "[%q x%d] ", m, n)
	}
	return strings.TrimSpace(b.String())
}

// Pid returns the process id.
func (p *proxyProc) Pid() int { return p.cmd.Process.Pid }

// Stop sends SIGTERM and waits for the exit, killing the process after 10 s.
func (p *proxyProc) Stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

var adminClient = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil}}

// waitReady polls the proxy's /readyz every 20 ms until it answers 200 or
// timeout passes.
func (p *proxyProc) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		resp, err := adminClient.Get("http://" + p.MetricsAddr + "/readyz")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.done:
			return errors.New("scenarios: stsproxy exited while waiting for /readyz")
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("scenarios: stsproxy not ready within %v", timeout)
}

// writeProfile saves the proxy's pprof profile name (with query, e.g.
// "heap?gc=1") to path. The proxy must be built with -tags stsproxy_pprof
// and started with STSPROXY_PPROF_ADDR.
func (p *proxyProc) writeProfile(name, path string) error {
	p.mu.Lock()
	addr := p.pprof
	p.mu.Unlock()
	if addr == "" {
		return errors.New("scenarios: stsproxy serves no pprof (build it with -tags stsproxy_pprof)")
	}
	resp, err := (&http.Client{Timeout: time.Minute, Transport: &http.Transport{Proxy: nil}}).Get("http://" + addr + "/debug/pprof/" + name)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("scenarios: GET /debug/pprof/%s: %s", name, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// metrics is a scrape of the Prometheus endpoint: the sum of the samples of
// each metric name (labels ignored), and the number of samples.
type metrics struct {
	sums    map[string]float64
	counts  map[string]int // samples by name
	samples int
	bytes   int
}

func (p *proxyProc) scrape() (*metrics, error) {
	resp, err := adminClient.Get("http://" + p.MetricsAddr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scenarios: GET /metrics: %s", resp.Status)
	}
	return parseMetrics(string(body)), nil
}

func parseMetrics(body string) *metrics {
	m := &metrics{sums: map[string]float64{}, counts: map[string]int{}, bytes: len(body)}
	for line := range strings.SplitSeq(body, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		name := line[:sp]
		if i := strings.IndexByte(name, '{'); i >= 0 {
			name = name[:i]
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			continue
		}
		m.sums[name] += v
		m.counts[name]++
		m.samples++
	}
	return m
}

// rssKB reads VmRSS of pid from /proc, in kB.
func rssKB(pid int) (int, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
		}
	}
	return 0, errors.New("scenarios: no VmRSS in /proc status")
}

// rssSampler samples a process's RSS every interval until stopped.
type rssSampler struct {
	stop    chan struct{}
	done    chan struct{}
	samples []int // kB
}

func sampleRSS(pid int, interval time.Duration) *rssSampler {
	s := &rssSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			if kb, err := rssKB(pid); err == nil {
				s.samples = append(s.samples, kb)
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// Every returns every n-th sample, in kB, and the last one.
func (s *rssSampler) Every(n int) []int {
	var out []int
	for i := 0; i < len(s.samples); i += n {
		out = append(out, s.samples[i])
	}
	if len(s.samples) > 0 && (len(s.samples)-1)%n != 0 {
		out = append(out, s.samples[len(s.samples)-1])
	}
	return out
}

// Stop ends sampling and returns the first, peak and last samples in kB.
func (s *rssSampler) Stop() (first, peak, last int) {
	close(s.stop)
	<-s.done
	if len(s.samples) == 0 {
		return 0, 0, 0
	}
	for _, v := range s.samples {
		peak = max(peak, v)
	}
	return s.samples[0], peak, s.samples[len(s.samples)-1]
}

// callTracker records when the emulator's call counter moves, polling every
// 5 ms, as offsets from a start time.
type callTracker struct {
	calls func() int
	start time.Time
	stop  chan struct{}
	done  chan struct{}
	mu    sync.Mutex      // guards at
	at    []time.Duration // one entry per call
}

func trackCalls(calls func() int, start time.Time) *callTracker {
	c := &callTracker{calls: calls, start: start, stop: make(chan struct{}), done: make(chan struct{})}
	last := calls()
	go func() {
		defer close(c.done)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-c.stop:
				return
			case <-t.C:
			}
			if n := c.calls(); n != last {
				off := time.Since(c.start)
				c.mu.Lock()
				for range n - last {
					c.at = append(c.at, off)
				}
				c.mu.Unlock()
				last = n
			}
		}
	}()
	return c
}

// Stop ends tracking and returns the call offsets.
func (c *callTracker) Stop() []time.Duration {
	close(c.stop)
	<-c.done
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.at
}
