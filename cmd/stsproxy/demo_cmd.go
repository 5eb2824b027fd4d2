package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/stsauth/stsauth/ststest"
)

// Settings of "stsproxy demo" and "stsproxy demo request".
const (
	defaultDemoAddr        = "127.0.0.1:8080"
	defaultDemoMetricsAddr = "127.0.0.1:9090"
	defaultDemoAudience    = "https://api.example.com"

	// demoPath is the path "stsproxy demo request" asks for.
	demoPath = "/hello"
	// demoWait bounds how long "stsproxy demo request" waits for a demo
	// that is still starting.
	demoWait = 60 * time.Second
	// demoParentPoll is how often the demo checks that its parent lives.
	demoParentPoll = 250 * time.Millisecond
	// demoVerifiedHeader is set by the demo's upstream to "true" or
	// "false": whether the token it received checked out.
	demoVerifiedHeader = "X-Demo-Token-Verified"
)

// demoCommand is "stsproxy demo": the STS emulator, an upstream that
// verifies tokens and the proxy between them, in one foreground process.
var demoCommand = &command{
	name:     "stsproxy demo",
	synopsis: "stsproxy demo [flags]",
	flags: []string{"listen-addr", "metrics-listen-addr", "token-audience", "token-signing-algorithm",
		"token-duration", "token-tag", "log-level", "log-format"},
	defaults: map[string]string{
		"listen-addr":         defaultDemoAddr,
		"metrics-listen-addr": defaultDemoMetricsAddr,
		"token-audience":      defaultDemoAudience,
		"log-format":          "text",
	},
}

// demoRequestCommand is "stsproxy demo request": one request through a
// running demo, and what the upstream made of its token.
var demoRequestCommand = &command{
	name:     "stsproxy demo request",
	synopsis: "stsproxy demo request [--listen-addr ADDR]",
	flags:    []string{"listen-addr"},
	defaults: map[string]string{"listen-addr": defaultDemoAddr},
}

// runDemo implements "stsproxy demo" and dispatches "stsproxy demo request".
// The demo runs until ctx is done (Ctrl-C, SIGTERM) or its parent process
// goes away, as when "go run" is killed: it then stops everything, so no
// process and no port outlives it.
func runDemo(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "request" {
		return runDemoRequest(ctx, args[1:], getenv, stdout, stderr)
	}
	cfg, code := loadConfig(demoCommand, args, getenv, stdout, stderr)
	if cfg == nil {
		return code
	}
	log := newLogger(cfg, stderr)

	ctx, stop := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		watchParent(ctx, os.Getppid, demoParentPoll, stop)
	}()
	defer func() {
		stop()
		<-watched
	}()

	emu := ststest.NewServer()
	defer emu.Close()
	account := emu.AccountID
	if account == "" {
		account = ststest.DefaultAccountID
	}
	appLn, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintf(stderr, "stsproxy: demo: listen for the app: %v\n", err)
		return 1
	}
	app := &http.Server{Handler: demoApp(emu.Issuer()), ReadHeaderTimeout: readHeaderTimeout}
	appDone := make(chan struct{})
	go func() {
		defer close(appDone)
		_ = app.Serve(appLn)
	}()
	defer func() {
		_ = app.Close()
		<-appDone
	}()

	// stsproxy inbound in front of the app, as its sidecar would be.
	inboundArgs := []string{"--listen-addr", "127.0.0.1:0", "--metrics-enabled=false",
		"--upstream", "http://" + appLn.Addr().String(), "--issuer", emu.Issuer(), "--account", account,
		"--allow-insecure-issuer", "--log-level", cfg.logLevel.String(), "--log-format", cfg.logFormat}
	for _, a := range cfg.audience.Values() {
		inboundArgs = append(inboundArgs, "--audience", a)
	}
	icfg, err := parseCommandConfig(inboundCommand, inboundArgs, func(string) string { return "" })
	if err != nil {
		fmt.Fprintf(stderr, "stsproxy: demo: %v\n", err)
		return 1
	}
	inboundReady := make(chan string, 1)
	icfg.onReady = func(addr, _ string) { inboundReady <- addr }
	inboundCtx, stopInbound := context.WithCancel(ctx)
	inboundDone := make(chan error, 1)
	go func() { inboundDone <- serveInbound(inboundCtx, icfg, log.With("mode", "inbound")) }()
	defer func() {
		stopInbound()
		<-inboundDone
	}()
	var inboundAddr string
	select {
	case inboundAddr = <-inboundReady:
	case err := <-inboundDone:
		inboundDone <- err // for the deferred wait
		fmt.Fprintf(stderr, "stsproxy: demo: stsproxy inbound: %v\n", err)
		return 1
	case <-ctx.Done():
		fmt.Fprintln(stdout, "stsproxy demo: stopped")
		return 0
	}

	cfg.sts = emu.Client()
	cfg.upstreamHost = inboundAddr
	cfg.upstreamScheme = "http"
	cfg.onReady = func(addr, metricsAddr string) {
		fmt.Fprint(stdout, demoBanner(demoAddrs{proxy: addr, metrics: metricsAddr, inbound: inboundAddr, app: appLn.Addr().String()},
			emu.Issuer(), cfg.audience.Values(), runningUnderGoRun()))
	}
	if err := serve(ctx, cfg, log); err != nil {
		log.Error("stsproxy demo failed", "error", err.Error())
		return 1
	}
	fmt.Fprintln(stdout, "stsproxy demo: stopped")
	return 0
}

// watchParent calls stop when the parent process changes (it exited and the
// process was re-parented), polling getppid every interval until ctx is
// done. "go run" does not pass SIGTERM on to the program it runs, so a
// killed "go run" would otherwise leave the demo holding its ports.
func watchParent(ctx context.Context, getppid func() int, interval time.Duration, stop func()) {
	parent := getppid()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if getppid() != parent {
				stop()
				return
			}
		}
	}
}

// runningUnderGoRun reports whether the binary was built by "go run", whose
// executables live in a go-build temporary directory.
func runningUnderGoRun() bool {
	exe, err := os.Executable()
	return err == nil && strings.Contains(exe, string(os.PathSeparator)+"go-build")
}

// demoAddrs are where the parts of the demo listen.
type demoAddrs struct {
	proxy, metrics string // stsproxy
	inbound        string // stsproxy inbound
	app            string // the app behind it
}

// demoBanner is what the demo prints once it is ready: what runs where, and
// what to run next.
func demoBanner(a demoAddrs, issuer string, audience []string, goRun bool) string {
	next := "stsproxy demo request"
	if goRun {
		next = "go run ./cmd/stsproxy demo request"
	}
	if a.proxy != defaultDemoAddr {
		next += " --listen-addr " + a.proxy
	}
	var b strings.Builder
	fmt.Fprintf(&b, "stsproxy demo is ready: client -> stsproxy -> stsproxy inbound -> app, with an STS emulator.\n\n")
	fmt.Fprintf(&b, "  proxy     http://%s (pinned to stsproxy inbound; token audience %s)\n", a.proxy, strings.Join(audience, ","))
	fmt.Fprintf(&b, "  inbound   http://%s (stsproxy inbound: verifies each token, passes the identity to the app as X-Aws-* headers)\n", a.inbound)
	fmt.Fprintf(&b, "  app       http://%s (prints the identity headers it received)\n", a.app)
	fmt.Fprintf(&b, "  STS       %s (emulator: issuer, /.well-known/openid-configuration, /.well-known/jwks.json)\n", issuer)
	fmt.Fprintf(&b, "  metrics   http://%s/metrics\n\n", a.metrics)
	fmt.Fprintf(&b, "Next, in another terminal:\n  %s\nor\n  %s\n", next, demoCurl(a.proxy))
	fmt.Fprintf(&b, "and without stsproxy, so without a token (401):\n  curl -sS -i http://%s%s\n\n", a.inbound, demoPath)
	fmt.Fprintf(&b, "Stop with Ctrl-C (or one SIGTERM): it stops everything.\n")
	return b.String()
}

// demoCurl is the curl command that shows the demo's result. It waits while
// the demo starts (--retry-connrefused), says why it failed (-sS) and fails
// on an HTTP error (--fail-with-body), rather than giving up silently.
func demoCurl(addr string) string {
	return "curl -sS --fail-with-body --retry 60 --retry-delay 1 --retry-connrefused http://" + addr + demoPath
}

// runDemoRequest implements "stsproxy demo request": it waits for the demo
// to listen (up to demoWait), sends one request through the proxy and prints
// the upstream's account of it: the token it received, whether the token
// verified, and its claims. It exits 0 only if the token verified.
func runDemoRequest(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cfg, code := loadConfig(demoRequestCommand, args, getenv, stdout, stderr)
	if cfg == nil {
		return code
	}
	ctx, cancel := context.WithTimeout(ctx, demoWait)
	defer cancel()
	if err := waitListening(ctx, cfg.listenAddr, func() {
		fmt.Fprintf(stderr, "stsproxy: demo request: waiting up to %v for the demo on %s (start it with: stsproxy demo)\n", demoWait, cfg.listenAddr)
	}); err != nil {
		fmt.Fprintf(stderr, "stsproxy: demo request: no demo listening on %s: start one with: stsproxy demo\n", cfg.listenAddr)
		return 1
	}
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+cfg.listenAddr+demoPath, nil)
	if err != nil {
		fmt.Fprintf(stderr, "stsproxy: demo request: %v\n", err)
		return 1
	}
	res, err := client.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "stsproxy: demo request: %v\n", err)
		return 1
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		fmt.Fprintf(stderr, "stsproxy: demo request: read the answer: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "GET http://%s%s: %s\n\n%s", cfg.listenAddr, demoPath, res.Status, body)
	if res.StatusCode != http.StatusOK || res.Header.Get(demoVerifiedHeader) != "true" {
		fmt.Fprintf(stderr, "stsproxy: demo request: no verified identity reached the app (%s)\n", res.Status)
		return 1
	}
	return 0
}

// waitListening waits until a TCP connection to addr succeeds or ctx is
// done, calling waiting once if that takes more than a second.
func waitListening(ctx context.Context, addr string, waiting func()) error {
	var d net.Dialer
	start := time.Now()
	for told := false; ; {
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			return conn.Close()
		}
		if !told && time.Since(start) > time.Second {
			waiting()
			told = true
		}
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// demoApp answers every request with a plain-text account of what it
// received from stsproxy inbound: the identity headers, and whether a token
// came along (it should not: stsproxy inbound removes it). It sets
// demoVerifiedHeader to whether an identity arrived, which stsproxy inbound
// sends only for a verified token.
func demoApp(issuer string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b strings.Builder
		fmt.Fprintf(&b, "The app received %s %s", r.Method, r.URL.Path)
		if via := r.Header.Get("Via"); via != "" {
			fmt.Fprintf(&b, " through stsproxy (Via: %s)", via)
		}
		fmt.Fprintf(&b, " and stsproxy inbound.\n\n")
		names := make([]string, 0, len(r.Header))
		for name := range r.Header {
			if hasPrefixFold(name, defaultClaimHeaderPrefix) {
				names = append(names, name)
			}
		}
		slices.Sort(names)
		verified := len(r.Header.Values(defaultClaimHeaderPrefix+"Account")) == 1
		if verified {
			fmt.Fprintf(&b, "stsproxy attached a token; stsproxy inbound verified it with package verify (its signature\n")
			fmt.Fprintf(&b, "against the keys %s publishes, issuer, account,\n", issuer)
			fmt.Fprintf(&b, "audience and lifetime) and passed the caller's identity on as headers:\n\n")
		} else {
			fmt.Fprintf(&b, "No verified identity arrived.\n\n")
		}
		for _, name := range names {
			for _, v := range r.Header.Values(name) {
				fmt.Fprintf(&b, "  %s: %s\n", name, v)
			}
		}
		if r.Header.Get("Authorization") == "" {
			fmt.Fprintf(&b, "\nNo Authorization header: the token stopped at stsproxy inbound, and so did any X-Aws-*\nheader a client sent.\n")
		} else {
			fmt.Fprintf(&b, "\nAn Authorization header arrived too (--forward-token).\n")
		}
		fmt.Fprintf(&b, "Authorize on X-Aws-Principal-Id, the caller's ARN; X-Aws-Subject may name the user a session\nacts for instead.\n")
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set(demoVerifiedHeader, fmt.Sprint(verified))
		io.WriteString(w, b.String())
	})
}
