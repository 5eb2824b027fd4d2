package load

import (
	"math"
	"slices"
	"time"
)

// Summary describes a set of latency samples. Percentiles are exact: they
// are taken from the sorted samples by the nearest-rank method, not from a
// histogram. The zero Summary describes no samples.
type Summary struct {
	Count int
	Min   time.Duration
	Mean  time.Duration
	P50   time.Duration
	P90   time.Duration
	P99   time.Duration
	Max   time.Duration
}

// Percentile returns the p-th percentile, 0 < p <= 100, of sorted by the
// nearest-rank method: the smallest sample such that at least p percent of
// the samples are less than or equal to it. sorted must be in ascending
// order. It returns 0 if sorted is empty; p <= 0 gives the minimum and
// p >= 100 the maximum.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	if p <= 0 {
		return sorted[0]
	}
	if p >= 100 {
		return sorted[n-1]
	}
	// The rank is ceil(p/100 * n), 1-based. p/100*n is computed as p*n/100
	// so that exact products such as 99*100/100 do not round up to 100.
	rank := int(math.Ceil(p * float64(n) / 100))
	rank = min(max(rank, 1), n)
	return sorted[rank-1]
}

// Summarize returns the Summary of samples. It sorts samples in place.
func Summarize(samples []time.Duration) Summary {
	if len(samples) == 0 {
		return Summary{}
	}
	slices.Sort(samples)
	var sum float64
	for _, s := range samples {
		sum += float64(s)
	}
	return Summary{
		Count: len(samples),
		Min:   samples[0],
		Mean:  time.Duration(sum / float64(len(samples))),
		P50:   Percentile(samples, 50),
		P90:   Percentile(samples, 90),
		P99:   Percentile(samples, 99),
		Max:   samples[len(samples)-1],
	}
}
