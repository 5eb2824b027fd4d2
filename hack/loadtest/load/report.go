package load

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"time"
)

// SummaryMs is a [Summary] in milliseconds, for JSON.
type SummaryMs struct {
	Count int     `json:"count"`
	Min   float64 `json:"min_ms"`
	Mean  float64 `json:"mean_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
}

// BucketMs is a timeline [Bucket] in milliseconds, for JSON.
type BucketMs struct {
	OffsetMs float64 `json:"offset_ms"`
	SummaryMs
	Errors int64 `json:"errors"`
}

// Report is a [Result] shaped for JSON output.
type Report struct {
	Start           time.Time        `json:"start"`
	ElapsedS        float64          `json:"elapsed_s"`
	Total           int64            `json:"total"`
	RPS             float64          `json:"rps"`
	Errors          int64            `json:"errors"`
	Status          map[string]int64 `json:"status"`
	TransportErrors map[string]int64 `json:"transport_errors"`
	Latency         SummaryMs        `json:"latency"`
	OKLatency       SummaryMs        `json:"ok_latency"`
	ErrLatency      SummaryMs        `json:"error_latency"`
	Timeline        []BucketMs       `json:"timeline,omitempty"`
}

// Ms converts d to fractional milliseconds.
func Ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Ms returns s in milliseconds.
func (s Summary) Ms() SummaryMs {
	return SummaryMs{Count: s.Count, Min: Ms(s.Min), Mean: Ms(s.Mean), P50: Ms(s.P50), P90: Ms(s.P90), P99: Ms(s.P99), Max: Ms(s.Max)}
}

// Report returns r shaped for JSON output.
func (r *Result) Report() Report {
	rep := Report{
		Start:           r.Start,
		ElapsedS:        r.Elapsed.Seconds(),
		Total:           r.Total,
		RPS:             r.RPS(),
		Errors:          r.Errors(),
		Status:          make(map[string]int64, len(r.Status)),
		TransportErrors: r.TransportErrors,
		Latency:         r.Latency.Ms(),
		OKLatency:       r.OKLatency.Ms(),
		ErrLatency:      r.ErrLatency.Ms(),
	}
	for code, n := range r.Status {
		rep.Status[strconv.Itoa(code)] = n
	}
	for _, b := range r.Timeline {
		rep.Timeline = append(rep.Timeline, BucketMs{OffsetMs: Ms(b.Offset), SummaryMs: b.Summary.Ms(), Errors: b.Errors})
	}
	return rep
}

// WriteText writes a human-readable report of r to w.
func (r *Result) WriteText(w io.Writer) error {
	ew := &errWriter{w: w}
	ew.printf("requests   %d in %.2fs, %.0f req/s\n", r.Total, r.Elapsed.Seconds(), r.RPS())
	ew.printf("status    ")
	for _, code := range slices.Sorted(maps.Keys(r.Status)) {
		ew.printf(" %d:%d", code, r.Status[code])
	}
	for _, class := range slices.Sorted(maps.Keys(r.TransportErrors)) {
		ew.printf(" transport/%s:%d", class, r.TransportErrors[class])
	}
	ew.printf("\nerrors     %d (not 2xx or no response)\n", r.Errors())
	ew.printf("latency    %s\n", fmtSummary(r.Latency))
	if r.ErrLatency.Count > 0 {
		ew.printf("  2xx      %s\n  errors   %s\n", fmtSummary(r.OKLatency), fmtSummary(r.ErrLatency))
	}
	if len(r.Timeline) > 0 {
		ew.printf("timeline (by request start)\n  %8s %8s %9s %9s %9s %6s\n", "t", "n", "p50", "p99", "max", "errors")
		for _, b := range r.Timeline {
			ew.printf("  %7.2fs %8d %9s %9s %9s %6d\n", b.Offset.Seconds(), b.Count, fmtDur(b.P50), fmtDur(b.P99), fmtDur(b.Max), b.Errors)
		}
	}
	return ew.err
}

func fmtSummary(s Summary) string {
	return fmt.Sprintf("n=%d p50=%s p90=%s p99=%s max=%s mean=%s",
		s.Count, fmtDur(s.P50), fmtDur(s.P90), fmtDur(s.P99), fmtDur(s.Max), fmtDur(s.Mean))
}

// fmtDur prints d in ms with three decimals: "1.234ms".
func fmtDur(d time.Duration) string { return strconv.FormatFloat(Ms(d), 'f', 3, 64) + "ms" }

type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) printf(format string, args ...any) {
	if e.err == nil {
		_, e.err = fmt.Fprintf(e.w, format, args...)
	}
}
