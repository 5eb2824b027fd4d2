// Command stsrate measures how many STS calls a fleet of token sources makes:
// 3 replicas (token sources) keep 2 audience sets in use for 3 minutes with
// 1-minute tokens and a 5 s refresh skew, against ststest, and it prints the
// calls counted next to the range the README's reasoning predicts.
//
//	go run ./hack/stsrate
package main

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/stsauth/stsauth"
	"github.com/stsauth/stsauth/ststest"
)

func main() {
	srv := ststest.NewServer()
	defer srv.Close()
	const replicas, run = 3, 180 * time.Second
	sets := []stsauth.Audience{stsauth.MustAudience("https://a.example"), stsauth.MustAudience("https://b.example")}
	var srcs []*stsauth.TokenSource
	for i := 0; i < replicas; i++ {
		ts, err := stsauth.NewTokenSource(srv.Client(), stsauth.WithDuration(time.Minute), stsauth.WithRefreshSkew(5*time.Second))
		if err != nil {
			panic(err)
		}
		srcs = append(srcs, ts)
	}
	ctx := context.Background()
	start := time.Now()
	for time.Since(start) < run {
		for _, ts := range srcs {
			for _, a := range sets {
				if _, err := ts.Token(ctx, a); err != nil {
					panic(err)
				}
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	el := time.Since(start)
	for _, ts := range srcs {
		ts.Close()
	}
	interval := time.Minute - 5*time.Second
	// Each set of each replica: its first token, then a refresh every
	// interval; the first refresh comes at a random moment up to one
	// interval early, which costs at most one extra call.
	steady := math.Floor(el.Seconds() / interval.Seconds())
	n := float64(replicas * len(sets))
	fmt.Printf("replicas=%d sets=%d duration=1m skew=5s run=%v STS calls=%d expected %.0f to %.0f; long-run rate N*S/interval = %.1f/min\n",
		replicas, len(sets), el.Round(time.Second), srv.Calls(), n*(1+steady), n*(2+steady), n*60/interval.Seconds())
}
