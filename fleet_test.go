package stsauth

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"

	"github.com/stsauth/stsauth/ststest"
)

// The fleet scenario (issue 9 part 7): many token sources started together,
// each asked for several audience sets, against one STS that throttles. It
// runs real TokenSources (scheduler, flights, backoff) over the wire against
// ststest, all on one fake clock that the driver advances in steps, waiting
// at each step until every source is quiet, so hours of fleet time take a
// minute. It lives in this package because the clock is injected through
// unexported fields. hack/bench/fleet.sh runs it.
var (
	fleetRun     = flag.Bool("fleet", false, "run BenchmarkFleet (skipped otherwise: it takes about a minute)")
	fleetSources = flag.Int("fleet.sources", 1000, "token sources in the fleet")
	fleetSets    = flag.Int("fleet.sets", 10, "audience sets per source")
	fleetRate    = flag.Float64("fleet.rate", 50, "STS throttle, calls per second (burst: one second's worth)")
	fleetSVG     = flag.String("fleet.svg", "", "write the plot to this SVG file")
)

// fleetStep is the fake time between two steps of the driver; fleetPeriod is
// how often each source gets a request for each of its sets.
const (
	fleetStep     = 250 * time.Millisecond
	fleetPeriod   = 10 * time.Second
	fleetDuration = time.Hour // requested token lifetime
)

// fleetRecorder counts STS calls per second of fake time.
type fleetRecorder struct {
	clock *fakeClock
	start time.Time

	mu       sync.Mutex
	ok, rej  map[int]int // by second since start
	failures int         // calls failed otherwise
}

func (r *fleetRecorder) record(err error) {
	sec := int(r.clock.Now().Sub(r.start) / time.Second)
	var api smithy.APIError
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case err == nil:
		r.ok[sec]++
	case errors.As(err, &api) && api.ErrorCode() == "Throttling":
		r.rej[sec]++
	default:
		r.failures++
	}
}

type fleetResult struct {
	sources, sets     int
	rate              float64
	timeToFull        time.Duration
	calls, rejected   int
	otherFailures     int
	requests, refused int // client requests, and those that got an error
	windowStart       time.Duration
	mean, peakMin     float64 // refresh calls/s over the window; peak minute
	peakSecond        int
	wall              time.Duration
	okBySec, rejBySec map[int]int
	simulated         time.Duration
}

func BenchmarkFleet(b *testing.B) {
	if !*fleetRun {
		b.Skip("run with -fleet (see hack/bench/fleet.sh)")
	}
	for b.Loop() {
		r := runFleet(b, *fleetSources, *fleetSets, *fleetRate, fleetStep)
		b.ReportMetric(r.timeToFull.Seconds(), "s-to-all-tokens")
		b.ReportMetric(float64(r.calls), "sts-calls")
		b.ReportMetric(float64(r.rejected), "throttled")
		b.ReportMetric(r.mean, "refresh/s-mean")
		b.ReportMetric(r.peakMin, "refresh/s-peak-minute")
		b.ReportMetric(r.peakMin/r.mean, "peak/mean")
		fmt.Fprintf(os.Stderr, "fleet: %d sources x %d sets, STS %g calls/s: all tokens after %v; %d STS calls, %d throttled, %d other failures; %d client requests, %d got an error; steady state over 2 lifetimes from %v: mean %.2f refresh calls/s, peak minute %.2f/s (%.2fx), peak second %d; %v simulated in %v\n",
			r.sources, r.sets, r.rate, r.timeToFull, r.calls, r.rejected, r.otherFailures, r.requests, r.refused,
			r.windowStart, r.mean, r.peakMin, r.peakMin/r.mean, r.peakSecond, r.simulated, r.wall.Round(time.Second))
		if *fleetSVG != "" {
			if err := os.WriteFile(*fleetSVG, fleetPlot(r), 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// TestFleetSmall runs the fleet scenario small enough for every test run,
// so the driver cannot rot: every source gets all its tokens through the
// throttle, and keeps them.
func TestFleetSmall(t *testing.T) {
	r := runFleet(t, 20, 3, 5, 2*time.Second)
	if r.timeToFull <= 0 || r.rejected == 0 {
		t.Fatalf("time to all tokens %v, %d throttled: want some throttling, then all tokens", r.timeToFull, r.rejected)
	}
	if r.calls-r.rejected < 2*20*3 {
		t.Fatalf("%d successful calls over two lifetimes, want at least %d", r.calls-r.rejected, 2*20*3)
	}
}

func runFleet(tb testing.TB, nSources, nSets int, rate float64, fleetStep time.Duration) fleetResult {
	wallStart := time.Now()
	clock := newFakeClock()
	clock.firing = true
	srv := ststest.NewUnstartedServer()
	srv.Now = clock.Now
	srv.Start()
	defer srv.Close()
	srv.SetThrottle(rate, int(math.Max(1, rate)))

	httpTransport := &http.Transport{MaxIdleConnsPerHost: 64}
	defer httpTransport.CloseIdleConnections()
	client := srv.Client(func(o *sts.Options) {
		o.RetryMaxAttempts = 1
		o.HTTPClient = &http.Client{Transport: httpTransport}
	})
	rec := &fleetRecorder{clock: clock, start: clock.Now(), ok: map[int]int{}, rej: map[int]int{}}
	recorded := clientFunc(func(ctx context.Context, in *sts.GetWebIdentityTokenInput, o ...func(*sts.Options)) (*sts.GetWebIdentityTokenOutput, error) {
		out, err := client.GetWebIdentityToken(ctx, in, o...)
		rec.record(err)
		return out, err
	})

	sets := make([]Audience, nSets)
	for j := range sets {
		sets[j] = MustAudience(fmt.Sprintf("https://api%d.example.com", j))
	}
	sources := make([]*TokenSource, nSources)
	for i := range sources {
		ts, err := NewTokenSource(recorded, WithSigningAlgorithm(ES384), WithDuration(fleetDuration))
		if err != nil {
			tb.Fatal(err)
		}
		ts.now, ts.realClock = clock.Now, false
		ts.timerAt = func(at time.Time) (<-chan time.Time, func() bool) {
			return clock.timerAtNotify(at, func() { ts.parked.Store(-1) })
		}
		sources[i] = ts
		defer ts.Close()
	}
	quiet := func() {
		for {
			busy := false
			for _, ts := range sources {
				if !isQuiet(ts) {
					busy = true
					break
				}
			}
			if !busy {
				return
			}
			runtime.Gosched()
		}
	}

	// Each (source, set) is asked for every fleetPeriod, at its own random
	// offset; at time 0 every one is asked at once: the fleet starts.
	steps := int(fleetPeriod / fleetStep)
	due := make([][][2]int, steps)
	for i := range nSources {
		for j := range nSets {
			k := rand.IntN(steps)
			due[k] = append(due[k], [2]int{i, j})
		}
	}
	var requests, refused int
	var mu sync.Mutex
	ask := func(batch [][2]int) {
		if len(batch) < 64 { // not worth goroutines
			for _, w := range batch {
				requests++
				if _, err := sources[w[0]].Token(context.Background(), sets[w[1]]); err != nil {
					refused++
				}
			}
			quiet()
			return
		}
		var wg sync.WaitGroup
		work := make(chan [2]int)
		for range 16 {
			wg.Go(func() {
				n, bad := 0, 0
				for w := range work {
					n++
					if _, err := sources[w[0]].Token(context.Background(), sets[w[1]]); err != nil {
						bad++
					}
				}
				mu.Lock()
				requests, refused = requests+n, refused+bad
				mu.Unlock()
			})
		}
		for _, w := range batch {
			work <- w
		}
		close(work)
		wg.Wait()
		quiet()
	}
	full := func() bool {
		for _, ts := range sources {
			for _, aud := range sets {
				if !ts.Holds(aud) {
					return false
				}
			}
		}
		return true
	}

	var all [][2]int
	for _, batch := range due {
		all = append(all, batch...)
	}
	ask(all)
	start := clock.Now()
	var timeToFull time.Duration
	limit := 4 * fleetDuration
	for step := 1; ; step++ {
		clock.Advance(fleetStep)
		quiet()
		ask(due[step%steps])
		elapsed := clock.Now().Sub(start)
		if timeToFull == 0 && full() {
			timeToFull = elapsed
		}
		if (timeToFull > 0 && elapsed >= timeToFull+2*fleetDuration) || elapsed >= limit {
			break
		}
	}
	if timeToFull == 0 {
		tb.Fatalf("after %v not every source holds all its tokens", limit)
	}

	r := fleetResult{
		sources: nSources, sets: nSets, rate: rate, timeToFull: timeToFull,
		calls: srv.Calls(), rejected: srv.Throttled(), otherFailures: rec.failures,
		requests: requests, refused: refused, windowStart: timeToFull,
		okBySec: rec.ok, rejBySec: rec.rej, simulated: clock.Now().Sub(start), wall: time.Since(wallStart),
	}
	// Steady state: successful calls over two lifetimes after the fleet
	// holds every token, per minute.
	from := int(timeToFull / time.Second)
	to := from + int(2*fleetDuration/time.Second)
	perMinute := map[int]int{}
	total := 0
	for s := from; s < to; s++ {
		perMinute[(s-from)/60] += rec.ok[s]
		total += rec.ok[s]
		r.peakSecond = max(r.peakSecond, rec.ok[s])
	}
	r.mean = float64(total) / float64(to-from)
	for _, n := range perMinute {
		r.peakMin = math.Max(r.peakMin, float64(n)/60)
	}
	return r
}

// fleetPlot draws, hand-written in SVG (no plotting dependency), two
// panels over fake time: STS calls per second in 30 s bins, successful and
// throttled, against the throttle's rate (the fleet's start goes off the
// scale and is labelled); and successful calls per second in 1 min bins
// over the steady-state window, against their mean.
func fleetPlot(r fleetResult) []byte {
	const (
		w, left, right = 960, 70, 20
		bin            = 30 // seconds, top panel
	)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="760" font-family="sans-serif" font-size="12">`+"\n", w)
	b.WriteString(`<rect width="100%" height="100%" fill="white"/>` + "\n")
	fmt.Fprintf(&b, `<text x="%d" y="20" font-size="14">%d token sources × %d audience sets, STS throttled at %g calls/s (fake clock, %v simulated in %v)</text>`+"\n",
		left, r.sources, r.sets, r.rate, r.simulated.Round(time.Second), r.wall.Round(time.Second))
	fmt.Fprintf(&b, `<text x="%d" y="38">every source holds all its tokens after %v; %d STS calls, %d throttled; steady state: mean %.2f calls/s, peak minute %.2f/s (%.2fx the mean)</text>`+"\n",
		left, r.timeToFull, r.calls, r.rejected, r.mean, r.peakMin, r.peakMin/r.mean)

	end := int(r.simulated/time.Second) + 1
	nb := end/bin + 1
	ok, rej := make([]float64, nb), make([]float64, nb)
	for s, n := range r.okBySec {
		ok[s/bin] += float64(n) / bin
	}
	for s, n := range r.rejBySec {
		rej[s/bin] += float64(n) / bin
	}
	ymax := math.Ceil(r.rate*1.5/10) * 10
	p1 := panel{b: &b, left: left, right: w - right, top: 60, bottom: 360, xmax: float64(end), ymax: ymax}
	p1.frame("minutes since the fleet started", "STS calls/s (30 s bins)", 15*60, 60)
	wx := p1.x(r.windowStart.Seconds())
	fmt.Fprintf(&b, `<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="#1f77b4" fill-opacity="0.07"/>`+"\n",
		wx, p1.top, p1.x(r.windowStart.Seconds()+2*fleetDuration.Seconds())-wx, p1.bottom-p1.top)
	p1.hline(r.rate, "gray", "throttle")
	p1.series(rej, bin, "#d62728")
	p1.series(ok, bin, "#1f77b4")
	for i := range nb {
		if rej[i] > ymax {
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" fill="#d62728">↑ %.0f throttled/s</text>`+"\n", p1.x(float64(i*bin))+4, p1.top+14, rej[i])
		}
		if ok[i] > ymax {
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" fill="#1f77b4">↑ %.0f ok/s</text>`+"\n", p1.x(float64(i*bin))+4, p1.top+28, ok[i])
		}
	}
	lx := w - right - 250
	fmt.Fprintf(&b, `<line x1="%d" y1="76" x2="%d" y2="76" stroke="#1f77b4" stroke-width="2"/><text x="%d" y="80">successful calls</text>`+"\n", lx, lx+20, lx+26)
	fmt.Fprintf(&b, `<line x1="%d" y1="94" x2="%d" y2="94" stroke="#d62728" stroke-width="2"/><text x="%d" y="98">throttled calls</text>`+"\n", lx, lx+20, lx+26)
	fmt.Fprintf(&b, `<rect x="%d" y="104" width="20" height="10" fill="#1f77b4" fill-opacity="0.07"/><text x="%d" y="114">steady-state window: 2 lifetimes</text>`+"\n", lx, lx+26)

	// Steady state, per minute.
	from := int(r.windowStart / time.Second)
	minutes := int(2 * fleetDuration / time.Minute)
	perMin := make([]float64, minutes)
	for s := from; s < from+minutes*60; s++ {
		perMin[(s-from)/60] += float64(r.okBySec[s]) / 60
	}
	p2 := panel{b: &b, left: left, right: w - right, top: 430, bottom: 710, xmax: float64(minutes * 60),
		ymax: math.Ceil(math.Max(slices.Max(perMin), 2*r.mean)*1.2*2) / 2}
	fmt.Fprintf(&b, `<text x="%d" y="420">steady state: successful (refresh) calls/s per minute over the window; the peak minute must stay within 2x the mean</text>`+"\n", left)
	p2.frame("minutes into the steady-state window", "refresh calls/s (1 min bins)", 15*60, 60)
	p2.hline(r.mean, "#2ca02c", fmt.Sprintf("mean %.2f", r.mean))
	p2.hline(2*r.mean, "gray", "2x mean")
	p2.series(perMin, 60, "#1f77b4")
	b.WriteString("</svg>\n")
	return []byte(b.String())
}

// panel is one plot area of fleetPlot.
type panel struct {
	b           *strings.Builder
	left, right int
	top, bottom int
	xmax, ymax  float64
}

func (p panel) x(v float64) float64 { return float64(p.left) + v/p.xmax*float64(p.right-p.left) }
func (p panel) y(v float64) float64 {
	return float64(p.bottom) - math.Min(v, p.ymax)/p.ymax*float64(p.bottom-p.top)
}

// frame draws axes, a grid of five rows and x ticks every tick seconds,
// labelled in units of unit seconds.
func (p panel) frame(xlabel, ylabel string, tick, unit int) {
	b := p.b
	fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", p.left, p.bottom, p.right, p.bottom)
	fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", p.left, p.top, p.left, p.bottom)
	for i := 0; i <= 5; i++ {
		v := p.ymax * float64(i) / 5
		fmt.Fprintf(b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/><text x="%d" y="%.1f" text-anchor="end">%.3g</text>`+"\n",
			p.left, p.y(v), p.right, p.y(v), p.left-6, p.y(v)+4, v)
	}
	for t := 0; float64(t) <= p.xmax; t += tick {
		fmt.Fprintf(b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="black"/><text x="%.1f" y="%d" text-anchor="middle">%d</text>`+"\n",
			p.x(float64(t)), p.bottom, p.x(float64(t)), p.bottom+5, p.x(float64(t)), p.bottom+18, t/unit)
	}
	fmt.Fprintf(b, `<text x="%d" y="%d" text-anchor="middle">%s</text>`+"\n", (p.left+p.right)/2, p.bottom+34, xlabel)
	mid := (p.top + p.bottom) / 2
	fmt.Fprintf(b, `<text x="16" y="%d" transform="rotate(-90 16 %d)" text-anchor="middle">%s</text>`+"\n", mid, mid, ylabel)
}

func (p panel) hline(v float64, color, label string) {
	fmt.Fprintf(p.b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="%s" stroke-dasharray="6 4"/><text x="%d" y="%.1f" fill="%s" text-anchor="end">%s</text>`+"\n",
		p.left, p.y(v), p.right, p.y(v), color, p.right-4, p.y(v)-4, color, label)
}

// series draws vals, one per bin of width seconds, as a line.
func (p panel) series(vals []float64, width int, color string) {
	var pts strings.Builder
	for i, v := range vals {
		fmt.Fprintf(&pts, "%.1f,%.1f ", p.x(float64(i*width+width/2)), p.y(v))
	}
	fmt.Fprintf(p.b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`+"\n", color, pts.String())
}
