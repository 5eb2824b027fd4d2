package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/stsauth/stsauth/hack/bench/internal/benchnet"
	"github.com/stsauth/stsauth/hack/loadtest/load"
	"github.com/stsauth/stsauth/ststest"
)

// fixedAudience is the --token-audience of the scenarios with one audience.
const fixedAudience = "https://api.example.com"

// rssGrowthTarget is issue 19's bound, in MiB, on the proxy's RSS growth
// over the dynamic scenario of 5000 hosts (run.sh s5).
const rssGrowthTarget = 15

// report is one scenario's markdown table.
type report struct {
	title, command string
	rows           [][4]string // metric, value, target, verdict
	notes          []string
}

func (r *report) add(metric, value, target string, pass *bool) {
	v := ""
	if pass != nil {
		v = "FAIL"
		if *pass {
			v = "pass"
		}
	}
	r.rows = append(r.rows, [4]string{metric, value, target, v})
}

func (r *report) note(format string, args ...any) {
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
}

func (r *report) write(w io.Writer) {
	fmt.Fprintf(w, "\n### %s\n\n`%s` (%s)\n\n| metric | value | target | |\n|---|---|---|---|\n",
		r.title, r.command, time.Now().UTC().Format(time.RFC3339))
	for _, row := range r.rows {
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", row[0], row[1], row[2], row[3])
	}
	for _, n := range r.notes {
		fmt.Fprintf(w, "\n%s\n", n)
	}
}

func ptr(b bool) *bool { return &b }

func ms(d time.Duration) string { return strconv.FormatFloat(load.Ms(d), 'f', 2, 64) + " ms" }

func lat(s load.Summary) string {
	return fmt.Sprintf("p50 %s, p99 %s, max %s (n=%d)", ms(s.P50), ms(s.P99), ms(s.Max), s.Count)
}

func statuses(r *load.Result) string {
	var parts []string
	for _, c := range slices.Sorted(maps.Keys(r.Status)) {
		parts = append(parts, fmt.Sprintf("%d: %d", c, r.Status[c]))
	}
	for _, c := range slices.Sorted(maps.Keys(r.TransportErrors)) {
		parts = append(parts, fmt.Sprintf("transport/%s: %d", c, r.TransportErrors[c]))
	}
	return strings.Join(parts, ", ")
}

// rig is one scenario's emulator, upstream and proxy.
type rig struct {
	sts      *ststest.Server
	upstream string // host:port
	upSrv    *http.Server
	proxy    *proxyProc
}

// Close stops the proxy and the servers the rig started.
func (r *rig) Close() {
	if r.proxy != nil {
		r.proxy.Stop()
	}
	if r.upSrv != nil {
		r.upSrv.Close()
	}
	r.sts.Close()
}

// newRig starts an emulator (configured by before, which may set faults),
// an upstream (on every loopback address if anyLoopback) and an stsproxy
// with the base flags plus extra(upstream).
func newRig(ctx context.Context, o *options, before func(*ststest.Server), anyLoopback, keepAlive bool, extra func(upstream string) []string, env ...string) (*rig, error) {
	r := &rig{sts: ststest.NewServer()}
	if before != nil {
		before(r.sts)
	}
	var ln net.Listener
	var err error
	if anyLoopback {
		ln, err = benchnet.ListenAnyLoopback(0)
	} else {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		r.Close()
		return nil, err
	}
	r.upSrv = benchnet.NewServer(benchnet.Upstream(64))
	r.upSrv.SetKeepAlivesEnabled(keepAlive)
	go r.upSrv.Serve(ln)
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	r.upstream = "127.0.0.1:" + port
	args := []string{
		"--listen-addr", "127.0.0.1:0", "--metrics-listen-addr", "127.0.0.1:0",
		"--upstream-scheme", "http", "--log-format", "json",
	}
	args = append(args, extra(r.upstream)...)
	fmt.Fprintf(o.log, "scenarios: stsproxy %s\n", strings.Join(args, " "))
	r.proxy, err = startProxy(ctx, o.stsproxy, args, append(stsEnv(r.sts.URL), env...))
	if err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

func fixedArgs(extra ...string) func(string) []string {
	return func(up string) []string {
		return append([]string{"--upstream-host", up, "--token-audience", fixedAudience}, extra...)
	}
}

func (r *rig) url() string { return "http://" + r.proxy.Addr + "/bench" }

// runCold sends N concurrent first requests through a freshly started proxy,
// once with a fixed audience (which the proxy also prefetches at start) and
// once with an audience derived from --upstream-host (nothing prefetched).
func runCold(ctx context.Context, o *options) error {
	rep := &report{title: fmt.Sprintf("cold: %d concurrent first requests, emulator latency %v", o.coldRequests, o.coldSTSLatency), command: o.command}
	variants := []struct {
		name string
		args func(string) []string
	}{
		{"fixed --token-audience (prefetched at start)", fixedArgs()},
		{"derived audience, no --token-audience (no prefetch)", func(up string) []string { return []string{"--upstream-host", up} }},
	}
	for _, v := range variants {
		r, err := newRig(ctx, o, func(s *ststest.Server) { s.SetLatency(o.coldSTSLatency) }, false, true, v.args)
		if err != nil {
			return err
		}
		res, err := load.Run(ctx, load.Config{URL: r.url(), Conns: o.coldRequests, Requests: int64(o.coldRequests), Timeout: 30 * time.Second})
		calls := r.sts.Calls()
		logs := r.proxy.LogSummary()
		r.Close()
		if err != nil {
			return err
		}
		rep.add(v.name+": STS calls", strconv.Itoa(calls), "1", ptr(calls == 1))
		rep.add(v.name+": failures", fmt.Sprintf("%d of %d (%s)", res.Errors(), res.Total, statuses(res)), "0", ptr(res.Errors() == 0 && res.Total == int64(o.coldRequests)))
		rep.add(v.name+": latency", lat(res.Latency), "", nil)
		rep.note("%s: proxy log %s", v.name, logs)
	}
	rep.write(o.out)
	return nil
}

// refreshRig starts a proxy with a 60 s token refreshed 50 s early, so the
// refresh window opens 5 to 10 s after the first fetch, and waits until it
// holds a token.
func refreshRig(ctx context.Context, o *options, before func(*ststest.Server)) (*rig, error) {
	r, err := newRig(ctx, o, before, false, true, fixedArgs("--token-duration", "60s", "--token-refresh-skew", "50s"))
	if err != nil {
		return nil, err
	}
	if err := r.proxy.waitReady(15 * time.Second); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// runSlowRefresh keeps a steady load on the proxy across background
// refreshes that each take slowLatency at the emulator.
func runSlowRefresh(ctx context.Context, o *options) error {
	r, err := refreshRig(ctx, o, func(s *ststest.Server) { s.SetLatency(o.slowLatency) })
	if err != nil {
		return err
	}
	defer r.Close()
	primeCalls := r.sts.Calls()
	tr := trackCalls(r.sts.Calls, time.Now())
	res, err := load.Run(ctx, load.Config{URL: r.url(), Conns: o.conns, Duration: o.slowDuration, Interval: o.interval})
	at := tr.Stop()
	if err != nil {
		return err
	}
	shift := res.Start.Sub(tr.start)
	var refreshes []time.Duration
	for _, a := range at {
		refreshes = append(refreshes, a-shift)
	}
	// A request "overlaps" a refresh if it started while the STS call was
	// in flight: from the call's arrival at the emulator to its answer.
	inFlight := o.slowLatency + 100*time.Millisecond
	during := func(start time.Duration) bool {
		for _, c := range refreshes {
			if start >= c-10*time.Millisecond && start < c+inFlight {
				return true
			}
		}
		return false
	}
	in := res.Select(during)
	out := res.Select(func(s time.Duration) bool { return !during(s) })

	rep := &report{title: fmt.Sprintf("slow-refresh: emulator latency %v, --token-duration 60s --token-refresh-skew 50s, %d conns for %v", o.slowLatency, o.conns, o.slowDuration), command: o.command}
	var offs []string
	for _, c := range refreshes {
		offs = append(offs, fmt.Sprintf("%.2fs", c.Seconds()))
	}
	rep.add("background refreshes (STS calls during load)", fmt.Sprintf("%d at %s", len(refreshes), strings.Join(offs, ", ")), ">= 1", ptr(len(refreshes) >= 1))
	rep.add("requests, failures", fmt.Sprintf("%d at %.0f req/s, %d failed (%s)", res.Total, res.RPS(), res.Errors(), statuses(res)), "0 failed", ptr(res.Errors() == 0))
	rep.add("latency, whole run", lat(res.Latency), fmt.Sprintf("max well under %v", o.slowLatency), ptr(res.Latency.Max < o.slowLatency/4))
	rep.add("latency, requests started while a refresh was in flight", lat(in), "", nil)
	rep.add("latency, all other requests (baseline)", lat(out), "", nil)
	if in.Count > 0 && out.Count > 0 {
		ratio := float64(in.P99) / float64(out.P99)
		rep.add("p99 during refresh / p99 baseline", fmt.Sprintf("%.2fx", ratio), "<= 1.25x", ptr(ratio <= 1.25))
	}
	rep.add("STS calls before load (prefetch)", strconv.Itoa(primeCalls), "", nil)
	if len(refreshes) > 0 {
		rep.note("Timeline around the first refresh (%s buckets by request start; the STS call arrived at %.2fs):\n\n%s",
			o.interval, refreshes[0].Seconds(), timelineTable(res, refreshes[0]-time.Second, refreshes[0]+o.slowLatency+time.Second))
	}
	rep.note("proxy log: %s", r.proxy.LogSummary())
	rep.write(o.out)
	return nil
}

func timelineTable(res *load.Result, from, to time.Duration) string {
	var b strings.Builder
	b.WriteString("| t | requests | p50 | p99 | max | errors |\n|---|---|---|---|---|---|\n")
	for _, bk := range res.Timeline {
		if bk.Offset+res.Interval <= from || bk.Offset > to {
			continue
		}
		fmt.Fprintf(&b, "| %.2fs | %d | %s | %s | %s | %d |\n", bk.Offset.Seconds(), bk.Count, ms(bk.P50), ms(bk.P99), ms(bk.Max), bk.Errors)
	}
	return b.String()
}

// runOutageRefresh fails every STS call from just after the first fetch,
// before the refresh window opens, until the end of the run: the cached
// token must keep serving and refresh attempts must follow the backoff
// schedule, not the request rate.
func runOutageRefresh(ctx context.Context, o *options) error {
	r, err := refreshRig(ctx, o, nil)
	if err != nil {
		return err
	}
	defer r.Close()
	before := r.sts.Calls()
	r.sts.FailAll("InternalFailure")
	tr := trackCalls(r.sts.Calls, time.Now())
	res, err := load.Run(ctx, load.Config{URL: r.url(), Conns: o.conns, Duration: o.outageDuration, Interval: o.interval})
	at := tr.Stop()
	if err != nil {
		return err
	}
	m, merr := r.proxy.scrape()

	rep := &report{title: fmt.Sprintf("outage-refresh: FailAll(InternalFailure) after the first fetch, --token-duration 60s --token-refresh-skew 50s, %d conns for %v", o.conns, o.outageDuration), command: o.command}
	rep.add("requests, failures", fmt.Sprintf("%d at %.0f req/s, %d failed (%s)", res.Total, res.RPS(), res.Errors(), statuses(res)), "0 failed", ptr(res.Errors() == 0))
	rep.add("latency", lat(res.Latency), "", nil)
	var offs []string
	for _, a := range at {
		offs = append(offs, fmt.Sprintf("%.2f", a.Seconds()))
	}
	rep.add("STS calls during the outage", fmt.Sprintf("%d (prefetch before it: %d)", len(at), before),
		"bounded by backoff (full jitter over 1, 2, 4 ... 30 s), not by requests", ptr(len(at) > 0 && int64(len(at)) < res.Total/1000+20))
	rep.add("STS call times, s after FailAll", strings.Join(offs, ", "), "gaps grow about x2", nil)
	if merr == nil {
		rep.add("token_refresh_failure_count_total", fmtF(m.sums["token_refresh_failure_count_total"]), "", nil)
		rep.add("token_stale_served_count_total", fmtF(m.sums["token_stale_served_count_total"]), "", nil)
		rep.add("token_fetch_count_total", fmtF(m.sums["token_fetch_count_total"]), "", nil)
	} else {
		rep.note("metrics scrape failed: %v", merr)
	}
	rep.note("The SDK's standard retryer retries InternalFailure (HTTP 500) up to 3 attempts per fetch, so each token-source attempt can show as up to 3 calls close together.")
	rep.note("proxy log: %s", r.proxy.LogSummary())
	rep.write(o.out)
	return nil
}

// topFamilies lists the n metric names with the most samples.
func topFamilies(m *metrics, n int) string {
	if m == nil {
		return "(no scrape)"
	}
	names := slices.Collect(maps.Keys(m.counts))
	slices.SortFunc(names, func(a, b string) int { return m.counts[b] - m.counts[a] })
	var parts []string
	for _, name := range names[:min(n, len(names))] {
		parts = append(parts, fmt.Sprintf("%s %d", name, m.counts[name]))
	}
	return strings.Join(parts, ", ")
}

func fmtF(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// runOutageHard fails every STS call with AccessDenied before the proxy
// starts: every request must fail promptly with 502 and STS must see a
// bounded call rate.
func runOutageHard(ctx context.Context, o *options) error {
	r, err := newRig(ctx, o, func(s *ststest.Server) { s.FailAll("AccessDenied") }, false, true, fixedArgs())
	if err != nil {
		return err
	}
	defer r.Close()
	tr := trackCalls(r.sts.Calls, time.Now())
	res, err := load.Run(ctx, load.Config{URL: r.url(), Conns: o.conns, Duration: o.hardDuration, Interval: o.interval})
	at := tr.Stop()
	if err != nil {
		return err
	}
	total := r.sts.Calls()
	m, merr := r.proxy.scrape()
	rep := &report{title: fmt.Sprintf("outage-hard: FailAll(AccessDenied) before start, %d conns for %v", o.conns, o.hardDuration), command: o.command}
	rep.add("responses", fmt.Sprintf("%d at %.0f req/s (%s)", res.Total, res.RPS(), statuses(res)), "all 502", ptr(res.Status[http.StatusBadGateway] == res.Total))
	rep.add("failure latency", lat(res.ErrLatency), "prompt (ms)", ptr(res.ErrLatency.P99 < 50*time.Millisecond))
	rate := float64(len(at)) / res.Elapsed.Seconds()
	rep.add("STS calls during load", fmt.Sprintf("%d (%.2f/s; %d including start-up prefetch)", len(at), rate, total), "bounded, not per request", ptr(int64(len(at)) < res.Total/100+40))
	var offs []string
	for _, a := range at {
		offs = append(offs, fmt.Sprintf("%.2f", a.Seconds()))
	}
	rep.add("STS call times, s", strings.Join(offs, ", "), "", nil)
	if merr == nil {
		rep.add("token_fetch_count_total", fmtF(m.sums["token_fetch_count_total"]), "", nil)
	}
	rep.note("proxy log: %s", r.proxy.LogSummary())
	rep.write(o.out)
	return nil
}

// runDynamic sends N requests, each routed by X-Upstream-Host to a distinct
// loopback address and so needing a distinct audience, through a proxy with
// a small token cache, sampling the proxy's RSS.
// floorRSS sends the dynamic load through floorproxy routing by the same
// header and returns its RSS at the start, peak and end, in kB.
func floorRSS(ctx context.Context, o *options, upstream string, hosts []string) (first, peak, last int, err error) {
	f, err := startFloor(ctx, o.floor, upstream, "X-Upstream-Host")
	if err != nil {
		return 0, 0, 0, err
	}
	defer f.Stop()
	rss := sampleRSS(f.Pid(), 250*time.Millisecond)
	res, err := load.Run(ctx, load.Config{
		URL: "http://" + f.Addr + "/bench", Conns: o.conns, Requests: int64(o.dynamicN), Duration: 4 * time.Minute,
		HostHeader: "X-Upstream-Host", Hosts: hosts,
	})
	first, peak, last = rss.Stop()
	if err == nil && res.Errors() > 0 {
		err = fmt.Errorf("scenarios: floorproxy: %d of %d requests failed (%s)", res.Errors(), res.Total, statuses(res))
	}
	return first, peak, last, err
}

func runDynamic(ctx context.Context, o *options) error {
	env := []string{"GODEBUG=gctrace=1"} // live heap after each GC, to tell retained memory from garbage
	if o.pprofDir != "" {
		env = append(env, "STSPROXY_PPROF_ADDR=127.0.0.1:0", "STSPROXY_PPROF_MEMPROFILERATE=4096")
	}
	if o.proxyEnv != "" {
		env = append(env, strings.Split(o.proxyEnv, ",")...)
	}
	r, err := newRig(ctx, o, nil, true, o.dynamicKeep, func(string) []string {
		// No mint budget: the scenario measures the cache and memory
		// under one STS call per audience, which the default budget
		// (--token-mint-burst 500, then 10 a second) would refuse.
		args := []string{"--token-cache-size", strconv.Itoa(o.dynamicCache), "--token-signing-algorithm", o.dynamicAlg, "--token-mint-rate", "0"}
		if o.dynamicFixed {
			args = append(args, "--token-audience", fixedAudience)
		}
		return args
	}, env...)
	if err != nil {
		return err
	}
	defer r.Close()
	_, port, _ := net.SplitHostPort(r.upstream)
	p, _ := strconv.Atoi(port)
	hosts, err := load.LoopbackHosts("127.0.0.0/8", o.dynamicN, p)
	if err != nil {
		return err
	}
	m0, err := r.proxy.scrape()
	if err != nil {
		return err
	}
	rss := sampleRSS(r.proxy.Pid(), 250*time.Millisecond)
	res, err := load.Run(ctx, load.Config{
		URL: r.url(), Conns: o.conns, Requests: int64(o.dynamicN), Duration: 4 * time.Minute,
		HostHeader: "X-Upstream-Host", Hosts: hosts, Interval: 5 * time.Second,
	})
	first, peak, last := rss.Stop()
	if err != nil {
		return err
	}
	m1, merr := r.proxy.scrape()
	if o.pprofDir != "" {
		path := filepath.Join(o.pprofDir, "heap.pb.gz")
		if err := r.proxy.writeProfile("heap?gc=1", path); err != nil {
			return err
		}
		fmt.Fprintf(o.log, "scenarios: heap profile after the run in %s\n", path)
	}
	kind := "distinct host-derived audiences"
	if o.dynamicFixed {
		kind = "distinct upstream hosts but one fixed --token-audience"
	}
	title := fmt.Sprintf("dynamic: %d requests with %s, --token-cache-size %d, %s, %d conns, upstream keep-alive %t", o.dynamicN, kind, o.dynamicCache, o.dynamicAlg, o.conns, o.dynamicKeep)
	if o.proxyEnv != "" {
		title += ", proxy environment " + o.proxyEnv
	}
	rep := &report{title: title, command: o.command}
	rep.add("requests, failures", fmt.Sprintf("%d in %.1fs (%.0f req/s), %d failed (%s)", res.Total, res.Elapsed.Seconds(), res.RPS(), res.Errors(), statuses(res)), "0 failed", ptr(res.Errors() == 0 && res.Total == int64(o.dynamicN)))
	rep.add("latency", lat(res.Latency), "", nil)
	rep.add("proxy RSS start / peak / end", fmt.Sprintf("%.1f / %.1f / %.1f MiB", float64(first)/1024, float64(peak)/1024, float64(last)/1024), "bounded", nil)
	rep.add("proxy RSS growth (end - start)", fmt.Sprintf("%+.1f MiB", float64(last-first)/1024), fmt.Sprintf("< %d MiB", rssGrowthTarget), ptr(last-first < rssGrowthTarget*1024))
	if o.floor != "" {
		ff, fp, fl, err := floorRSS(ctx, o, r.upstream, hosts)
		if err != nil {
			return err
		}
		rep.add("floor RSS start / peak / end (floorproxy -host-header X-Upstream-Host, 64 idle connections)", fmt.Sprintf("%.1f / %.1f / %.1f MiB", float64(ff)/1024, float64(fp)/1024, float64(fl)/1024), "", nil)
		rep.add("RSS growth, stsproxy - floor", fmt.Sprintf("%+.1f - %+.1f = %+.1f MiB", float64(last-first)/1024, float64(fl-ff)/1024, float64((last-first)-(fl-ff))/1024), "", nil)
	}
	rep.add("STS calls", strconv.Itoa(r.sts.Calls()), fmt.Sprintf("%d (one per audience)", o.dynamicN), nil)
	if merr == nil {
		ev := m1.sums["token_cache_eviction_count_total"]
		rep.add("token_cache_eviction_count_total", fmtF(ev), fmt.Sprintf("about %d", max(o.dynamicN-o.dynamicCache, 0)), nil)
		rep.add("token_cached_audiences", fmtF(m1.sums["token_cached_audiences"]), fmt.Sprintf("<= %d", o.dynamicCache), nil)
		series := m1.counts["token_fetch_count_total"]
		for _, name := range []string{"go_goroutines", "go_memstats_heap_inuse_bytes", "go_memstats_heap_idle_bytes", "go_memstats_heap_released_bytes", "go_memstats_stack_inuse_bytes", "go_memstats_gc_sys_bytes", "go_memstats_other_sys_bytes", "go_memstats_heap_objects", "process_open_fds"} {
			rep.add(name+" (before -> after)", fmtF(m0.sums[name])+" -> "+fmtF(m1.sums[name]), "", nil)
		}
		rep.add("token_fetch_count_total series (audience label values)", strconv.Itoa(series), "capped, far below the audience count", ptr(series < min(o.dynamicN/10, 1000)))
		rep.add("metrics exposition: samples, bytes (before -> after)", fmt.Sprintf("%d, %d -> %d, %d", m0.samples, m0.bytes, m1.samples, m1.bytes), "bounded", nil)
	} else {
		rep.note("metrics scrape failed: %v", merr)
	}
	var trail []string
	for _, kb := range rss.Every(20) {
		trail = append(trail, fmt.Sprintf("%.0f", float64(kb)/1024))
	}
	rep.note("Proxy RSS every 5 s, MiB: %s", strings.Join(trail, " "))
	if live := r.proxy.GCLive(); len(live) > 0 {
		step := max(len(live)/12, 1)
		var pick []string
		for i := 0; i < len(live); i += step {
			pick = append(pick, live[i])
		}
		if (len(live)-1)%step != 0 {
			pick = append(pick, live[len(live)-1])
		}
		rep.add("proxy live heap after GC (gctrace), first / last", live[0]+" / "+live[len(live)-1]+" MB", "flat", nil)
		rep.note("Proxy live heap after GC over the run (%d GCs, sampled), MB: %s", len(live), strings.Join(pick, " "))
	}
	rep.note("Largest metric families after the run (samples): %s", topFamilies(m1, 5))
	var tl []string
	for _, b := range res.Timeline {
		tl = append(tl, fmt.Sprintf("%.0fs: n=%d p99=%s", b.Offset.Seconds(), b.Count, ms(b.P99)))
	}
	rep.note("Per 5 s: %s", strings.Join(tl, "; "))
	rep.note("proxy log: %s", r.proxy.LogSummary())
	rep.write(o.out)
	return nil
}
