// Command stsrate measures how many STS calls a fleet of token sources makes:
// 3 replicas (token sources) keep 2 audience sets in use for 3 minutes with
// 1-minute tokens and a 5 s refresh skew, against ststest, and it prints the
// calls counted next to N*S*(1+run/(duration-skew)), the README's formula.
//
//	go run ./hack/stsrate
package main

import (
	"context"
	"fmt"
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
	fmt.Printf("replicas=%d sets=%d duration=1m skew=5s run=%v STS calls=%d predicted(N*S*(1+run/interval))=%.1f\n",
		replicas, len(sets), el.Round(time.Second), srv.Calls(), float64(replicas*len(sets))*(1+el.Seconds()/interval.Seconds()))
}
