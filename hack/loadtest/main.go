// Command loadtest is a closed-loop HTTP load generator for loopback
// benchmarks of stsproxy and its floor.
//
//	loadtest -url http://127.0.0.1:8080/ -c 32 -d 5s [-n N] [-H 'Name: value']...
//	         [-hosts-from 127.0.0.0/8 -hosts-count N -hosts-port P] [-timeline 250ms] [-json]
//
// Every run is bounded by -d, -n or both (hard caps: 5m, 5,000,000), and
// every connection goes to a loopback address. Percentiles are exact, from
// every recorded sample (nearest rank).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/stsauth/stsauth/hack/loadtest/load"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// options is the parsed command line.
type options struct {
	cfg  load.Config
	json bool
}

// headerFlag collects repeatable -H "Name: value" flags.
type headerFlag struct{ h http.Header }

// String lists the headers as "Name: value", for flag usage.
func (f *headerFlag) String() string {
	if f == nil || f.h == nil {
		return ""
	}
	var parts []string
	for k, vs := range f.h {
		for _, v := range vs {
			parts = append(parts, k+": "+v)
		}
	}
	return strings.Join(parts, ", ")
}

// Set adds one "Name: value" header.
func (f *headerFlag) Set(s string) error {
	name, value, ok := strings.Cut(s, ":")
	name = strings.TrimSpace(name)
	if !ok || name == "" || strings.ContainsAny(name, " \t") {
		return fmt.Errorf("want \"Name: value\", got %q", s)
	}
	if f.h == nil {
		f.h = make(http.Header)
	}
	f.h.Add(name, strings.TrimSpace(value))
	return nil
}

// parseArgs parses and validates args. It returns [flag.ErrHelp] for -h.
func parseArgs(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		o          options
		headers    headerFlag
		hostsFrom  string
		hostsCount int
		hostsPort  int
	)
	fs.StringVar(&o.cfg.URL, "url", "", "target URL; the host must be loopback (required)")
	fs.IntVar(&o.cfg.Conns, "c", 1, fmt.Sprintf("concurrent connections, 1 to %d", load.MaxConns))
	fs.DurationVar(&o.cfg.Duration, "d", 0, fmt.Sprintf("run duration, up to %v (at least one of -d and -n)", load.MaxDuration))
	fs.Int64Var(&o.cfg.Requests, "n", 0, fmt.Sprintf("total requests, up to %d (at least one of -d and -n)", load.MaxRequests))
	fs.Var(&headers, "H", `request header "Name: value" (repeatable)`)
	fs.StringVar(&hostsFrom, "hosts-from", "", "loopback prefix within 127.0.0.0/8 to draw per-request upstream hosts from")
	fs.IntVar(&hostsCount, "hosts-count", 0, "number of distinct hosts to cycle through (with -hosts-from)")
	fs.IntVar(&hostsPort, "hosts-port", 0, "port appended to each host (with -hosts-from)")
	fs.StringVar(&o.cfg.HostHeader, "host-header", "X-Upstream-Host", "header carrying the per-request host (with -hosts-from)")
	fs.DurationVar(&o.cfg.Interval, "timeline", 0, "report p50/p99/max per interval of this width, for example 250ms; 0 is off")
	fs.DurationVar(&o.cfg.Timeout, "timeout", load.DefaultTimeout, "per-request timeout")
	fs.BoolVar(&o.json, "json", false, "print the result as JSON")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	o.cfg.Header = headers.h
	switch {
	case hostsFrom == "" && (hostsCount != 0 || hostsPort != 0):
		return nil, errors.New("-hosts-count and -hosts-port need -hosts-from")
	case hostsFrom != "":
		hosts, err := load.LoopbackHosts(hostsFrom, hostsCount, hostsPort)
		if err != nil {
			return nil, err
		}
		o.cfg.Hosts = hosts
	}
	if o.cfg.Interval != 0 && o.cfg.Interval < time.Millisecond {
		return nil, fmt.Errorf("-timeline %v: want 0 or at least 1ms", o.cfg.Interval)
	}
	if err := o.cfg.Validate(); err != nil {
		return nil, err
	}
	return &o, nil
}

// run is the whole command; it returns the exit code: 0 success, 1 runtime
// failure, 2 bad usage.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parseArgs(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "loadtest:", err)
		return 2
	}
	res, err := load.Run(ctx, o.cfg)
	if res == nil {
		fmt.Fprintln(stderr, "loadtest:", err)
		return 1
	}
	if err != nil {
		fmt.Fprintln(stderr, "loadtest: interrupted:", err)
	}
	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(res.Report())
	} else {
		err = res.WriteText(stdout)
	}
	if err != nil {
		fmt.Fprintln(stderr, "loadtest:", err)
		return 1
	}
	return 0
}
