package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/stsauth/stsauth/hack/loadtest/load"
)

// Targets for stsproxy against the floor proxy (issue 19).
const (
	targetRPSRatio = 0.97 // stsproxy req/s >= 0.97 x floor
	targetP99Ratio = 1.1  // stsproxy p99 <= 1.1 x floor
)

// subject is a variant whose ratios to the floors are reported, with its
// targets.
type subject struct {
	name                 string
	rpsTarget, p99Target float64
}

// compareOrder is the order of the variants in the table; others follow.
var compareOrder = []string{"direct", "floor", "floor-pooled", "stsproxy", "inbound", "inbound-b"}

// reportCompare reads the loadtest -json results DIR/<variant>-<round>.json
// written by run.sh compare and prints every round and the medians as a
// markdown table, with the ratios of each subject present (the variants
// "stsproxy" and "inbound") to each floor variant against its targets.
func reportCompare(dir string, w io.Writer, subjects ...subject) error {
	files, err := filepath.Glob(filepath.Join(dir, "*-*.json"))
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return fmt.Errorf("scenarios: no <variant>-<round>.json in %s", dir)
	}
	byVariant := map[string][]load.Report{}
	var variants []string
	for _, f := range files {
		base := strings.TrimSuffix(filepath.Base(f), ".json")
		i := strings.LastIndexByte(base, '-')
		v, round := base[:i], base[i+1:]
		if _, err := strconv.Atoi(round); err != nil {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		var rep load.Report
		if err := json.Unmarshal(b, &rep); err != nil {
			return fmt.Errorf("scenarios: %s: %w", f, err)
		}
		if _, ok := byVariant[v]; !ok {
			variants = append(variants, v)
		}
		byVariant[v] = append(byVariant[v], rep)
	}
	slices.SortFunc(variants, func(a, b string) int {
		ia, ib := slices.Index(compareOrder, a), slices.Index(compareOrder, b)
		if ia < 0 {
			ia = len(compareOrder)
		}
		if ib < 0 {
			ib = len(compareOrder)
		}
		if ia != ib {
			return ia - ib
		}
		return strings.Compare(a, b)
	})

	fmt.Fprintln(w, "\n| target | round | req/s | p50 ms | p90 ms | p99 ms | max ms | errors |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|")
	type med struct{ rps, p50, p99 float64 }
	meds := map[string]med{}
	for _, v := range variants {
		reps := byVariant[v]
		slices.SortFunc(reps, func(a, b load.Report) int { return a.Start.Compare(b.Start) })
		var rps, p50, p99 []float64
		for i, r := range reps {
			fmt.Fprintf(w, "| %s | %d | %.0f | %.3f | %.3f | %.3f | %.3f | %d |\n",
				v, i+1, r.RPS, r.Latency.P50, r.Latency.P90, r.Latency.P99, r.Latency.Max, r.Errors)
			rps, p50, p99 = append(rps, r.RPS), append(p50, r.Latency.P50), append(p99, r.Latency.P99)
		}
		meds[v] = med{median(rps), median(p50), median(p99)}
	}
	fmt.Fprintln(w, "\nMedians over rounds:")
	fmt.Fprintln(w, "\n| target | req/s | p50 ms | p99 ms |\n|---|---|---|---|")
	for _, v := range variants {
		m := meds[v]
		fmt.Fprintf(w, "| %s | %.0f | %.3f | %.3f |\n", v, m.rps, m.p50, m.p99)
	}
	for _, sub := range subjects {
		s, okS := meds[sub.name]
		for _, v := range variants {
			f := meds[v]
			if !okS || !strings.HasPrefix(v, "floor") || f.rps <= 0 || f.p99 <= 0 {
				continue
			}
			rr, pr := s.rps/f.rps, s.p99/f.p99
			fmt.Fprintf(w, "\n| ratio %s/%s | value | target | |\n|---|---|---|---|\n", sub.name, v)
			fmt.Fprintf(w, "| req/s | %.2fx | >= %.2fx | %s |\n", rr, sub.rpsTarget, verdict(rr >= sub.rpsTarget))
			fmt.Fprintf(w, "| p99 | %.2fx | <= %.2fx | %s |\n", pr, sub.p99Target, verdict(pr <= sub.p99Target))
		}
	}
	return nil
}

func verdict(ok bool) string {
	if ok {
		return "pass"
	}
	return "FAIL"
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
