// Command scenarios drives stsproxy through fault scenarios that a shell
// script cannot: it starts an ststest STS emulator in process, starts the
// stsproxy binary against it (AWS_ENDPOINT_URL_STS), controls the
// emulator's faults while loading the proxy with the load package, and
// prints each result as a markdown table.
//
//	scenarios -stsproxy PATH [flags] cold|slow-refresh|outage-refresh|outage-hard|dynamic|all
//	scenarios report-compare|report-inbound DIR
//	scenarios serve-sts -token-file PATH [-audience A] [-alg RS256|ES384]
//
// Everything listens on and connects to loopback only, and every load is
// bounded in requests and time. hack/bench/run.sh builds and runs it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// options are the flags shared by the scenarios.
type options struct {
	stsproxy string
	conns    int
	interval time.Duration

	coldRequests   int
	coldSTSLatency time.Duration
	slowDuration   time.Duration
	slowLatency    time.Duration
	outageDuration time.Duration
	hardDuration   time.Duration
	dynamicN       int
	dynamicCache   int
	dynamicAlg     string
	dynamicFixed   bool
	dynamicKeep    bool
	pprofDir       string
	proxyEnv       string
	floor          string

	command string // the command line, for the report
	out     io.Writer
	log     io.Writer
}

var scenarioFuncs = map[string]func(context.Context, *options) error{
	"cold":           runCold,
	"slow-refresh":   runSlowRefresh,
	"outage-refresh": runOutageRefresh,
	"outage-hard":    runOutageHard,
	"dynamic":        runDynamic,
}

var scenarioOrder = []string{"cold", "slow-refresh", "outage-refresh", "outage-hard", "dynamic"}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "serve-sts" {
		return runServeSTS(ctx, args[1:], stderr)
	}
	if len(args) > 0 && (args[0] == "report-compare" || args[0] == "report-inbound") {
		if len(args) != 2 {
			fmt.Fprintln(stderr, "usage: scenarios report-compare|report-inbound DIR")
			return 2
		}
		inbound := subject{"inbound", inboundRPSRatio, inboundP99Ratio}
		subjects := []subject{{"stsproxy", targetRPSRatio, targetP99Ratio}, inbound}
		if args[0] == "report-inbound" {
			subjects = subjects[1:]
		}
		if err := reportCompare(args[1], stdout, subjects...); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		return 0
	}
	o := &options{out: stdout, log: stderr}
	fs := flag.NewFlagSet("scenarios", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.stsproxy, "stsproxy", "", "path of the stsproxy binary (required)")
	fs.IntVar(&o.conns, "c", 32, "connections for the steady loads")
	fs.DurationVar(&o.interval, "interval", 250*time.Millisecond, "timeline interval")
	fs.IntVar(&o.coldRequests, "cold-requests", 1000, "cold: concurrent first requests")
	fs.DurationVar(&o.coldSTSLatency, "cold-sts-latency", 100*time.Millisecond, "cold: emulator latency, so requests pile up on the first fetch")
	fs.DurationVar(&o.slowDuration, "slow-d", 20*time.Second, "slow-refresh: load duration")
	fs.DurationVar(&o.slowLatency, "slow-latency", 2*time.Second, "slow-refresh: emulator latency")
	fs.DurationVar(&o.outageDuration, "outage-d", 25*time.Second, "outage-refresh: load duration")
	fs.DurationVar(&o.hardDuration, "hard-d", 10*time.Second, "outage-hard: load duration")
	fs.IntVar(&o.dynamicN, "dynamic-n", 100_000, "dynamic: requests, each with a distinct host")
	fs.IntVar(&o.dynamicCache, "dynamic-cache", 1024, "dynamic: --token-cache-size")
	fs.StringVar(&o.dynamicAlg, "dynamic-alg", "ES384", "dynamic: --token-signing-algorithm; ES384 because the in-process emulator signs it faster than RS256 on a small machine")
	fs.BoolVar(&o.dynamicFixed, "dynamic-fixed-audience", false, "dynamic: also pass --token-audience, so only the upstream hosts vary (isolates per-host from per-audience state)")
	fs.BoolVar(&o.dynamicKeep, "dynamic-keepalive", true, "dynamic: the upstream keeps connections alive (false: it answers Connection: close)")
	fs.StringVar(&o.pprofDir, "pprof-dir", "", "dynamic: write the proxy's heap profile after the run (heap.pb.gz) to this directory; the stsproxy binary must be built with -tags stsproxy_pprof")
	fs.StringVar(&o.proxyEnv, "dynamic-env", "", "dynamic: comma list of KEY=VALUE added to the proxy's environment, e.g. GOGC=50,GOMEMLIMIT=24MiB")
	fs.StringVar(&o.floor, "floor", "", "dynamic: path of the floorproxy binary; the same load then also goes through it, routing by the same header, for its RSS growth")
	fs.StringVar(&o.command, "command", "", "the command to print in the reports; default: this command line")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if o.stsproxy == "" || fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: scenarios -stsproxy PATH [flags] "+strings.Join(scenarioOrder, "|")+"|all")
		return 2
	}
	if o.conns < 1 || o.coldRequests < 1 || o.dynamicN < 1 || o.dynamicCache < 1 {
		fmt.Fprintln(stderr, "scenarios: -c, -cold-requests, -dynamic-n and -dynamic-cache must be at least 1")
		return 2
	}
	name := fs.Arg(0)
	names := []string{name}
	if name == "all" {
		names = scenarioOrder
	} else if scenarioFuncs[name] == nil {
		fmt.Fprintf(stderr, "scenarios: unknown scenario %q; want %s or all\n", name, strings.Join(scenarioOrder, ", "))
		return 2
	}
	if o.command == "" {
		o.command = "scenarios " + strings.Join(args, " ")
	}
	failed := false
	for _, n := range names {
		if ctx.Err() != nil {
			break
		}
		fmt.Fprintf(stderr, "scenarios: running %s\n", n)
		if err := scenarioFuncs[n](ctx, o); err != nil {
			fmt.Fprintf(stderr, "scenarios: %s: %v\n", n, err)
			failed = true
		}
	}
	if failed || ctx.Err() != nil {
		return 1
	}
	return 0
}
