package load

import (
	"testing"
	"time"
)

func ms(n ...int) []time.Duration {
	out := make([]time.Duration, len(n))
	for i, v := range n {
		out[i] = time.Duration(v) * time.Millisecond
	}
	return out
}

func TestPercentile(t *testing.T) {
	t.Parallel()
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond // 1..100 ms
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"single p50", ms(7), 50, 7 * time.Millisecond},
		{"single p99", ms(7), 99, 7 * time.Millisecond},
		{"p0 is min", ms(1, 2, 3), 0, time.Millisecond},
		{"p100 is max", ms(1, 2, 3), 100, 3 * time.Millisecond},
		{"p50 of 4 is the 2nd", ms(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{"p51 of 4 is the 3rd", ms(1, 2, 3, 4), 51, 3 * time.Millisecond},
		{"p50 of 100", hundred, 50, 50 * time.Millisecond},
		{"p90 of 100", hundred, 90, 90 * time.Millisecond},
		{"p99 of 100 exact rank", hundred, 99, 99 * time.Millisecond},
		{"p99.9 of 100", hundred, 99.9, 100 * time.Millisecond},
		{"p99 of 10 is max", ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 99, 10 * time.Millisecond},
		{"p90 of 10", ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 90, 9 * time.Millisecond},
		{"p1 of 100", hundred, 1, time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := Percentile(tc.sorted, tc.p); got != tc.want {
				t.Errorf("Percentile(%v, %v) = %v, want %v", tc.sorted, tc.p, got, tc.want)
			}
		})
	}
}

// TestPercentileRankProperty checks the nearest-rank definition directly: at
// least p% of samples are <= the result, and fewer than p% are < it.
func TestPercentileRankProperty(t *testing.T) {
	t.Parallel()
	for n := 1; n <= 257; n += 16 {
		s := make([]time.Duration, n)
		for i := range s {
			s[i] = time.Duration(i * 3)
		}
		for _, p := range []float64{1, 10, 50, 90, 99, 99.9} {
			got := Percentile(s, p)
			var le, lt int
			for _, v := range s {
				if v <= got {
					le++
				}
				if v < got {
					lt++
				}
			}
			if float64(le)*100 < p*float64(n) || float64(lt)*100 >= p*float64(n) {
				t.Errorf("n=%d: Percentile(p%v) = %v: %d samples <=, %d <", n, p, got, le, lt)
			}
		}
	}
}

func TestSummarize(t *testing.T) {
	t.Parallel()
	got := Summarize(ms(5, 1, 4, 2, 3))
	want := Summary{
		Count: 5, Min: time.Millisecond, Mean: 3 * time.Millisecond,
		P50: 3 * time.Millisecond, P90: 5 * time.Millisecond, P99: 5 * time.Millisecond, Max: 5 * time.Millisecond,
	}
	if got != want {
		t.Errorf("Summarize = %+v, want %+v", got, want)
	}
	if got := Summarize(nil); got != (Summary{}) {
		t.Errorf("Summarize(nil) = %+v, want zero", got)
	}
}

func TestAggregateTimeline(t *testing.T) {
	t.Parallel()
	per := [][]sample{
		{{latency: time.Millisecond, startMs: 0, status: 200}, {latency: 3 * time.Millisecond, startMs: 260, status: 502}},
		{{latency: 2 * time.Millisecond, startMs: 10, status: 200}, {latency: 9 * time.Millisecond, startMs: 600, errIdx: 3}},
	}
	r := aggregate(per, time.Now(), time.Second, 250*time.Millisecond)
	if r.Total != 4 {
		t.Errorf("Total = %d, want 4", r.Total)
	}
	if r.Errors() != 2 {
		t.Errorf("Errors() = %d, want 2", r.Errors())
	}
	if r.Status[200] != 2 || r.Status[502] != 1 || r.TransportErrors["eof"] != 1 {
		t.Errorf("Status = %v, TransportErrors = %v, want 200:2 502:1 eof:1", r.Status, r.TransportErrors)
	}
	if len(r.Timeline) != 3 {
		t.Fatalf("len(Timeline) = %d, want 3", len(r.Timeline))
	}
	wantN := []int{2, 1, 1}
	wantErr := []int64{0, 1, 1}
	for i, b := range r.Timeline {
		if b.Count != wantN[i] || b.Errors != wantErr[i] || b.Offset != time.Duration(i)*250*time.Millisecond {
			t.Errorf("Timeline[%d] = %+v, want count %d errors %d", i, b, wantN[i], wantErr[i])
		}
	}
	if r.Timeline[0].Max != 2*time.Millisecond {
		t.Errorf("Timeline[0].Max = %v, want 2ms", r.Timeline[0].Max)
	}
	if got := r.Select(func(s time.Duration) bool { return s >= 250*time.Millisecond }); got.Count != 2 || got.Max != 9*time.Millisecond {
		t.Errorf("Select(>=250ms) = %+v, want 2 samples, max 9ms", got)
	}
	if r.OKLatency.Count != 2 || r.ErrLatency.Count != 2 {
		t.Errorf("OK/Err counts = %d/%d, want 2/2", r.OKLatency.Count, r.ErrLatency.Count)
	}
}
