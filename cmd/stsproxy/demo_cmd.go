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

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/stsauth/stsauth"
	"github.com/stsauth/stsauth/ststest"
)

// Settings of "stsproxy demo" and "stsproxy demo request".
const (
	defaultDemoAddr        = "127.0.0.1:8080"
	defaultDemoMetricsAddr = "127.0.0.1:9090"
	defaultDemoAudience    = "https://api.example.com"
	defaultDemoSTSAddr     = "127.0.0.1:8090"

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

// demoSTSFlag is the address of the demo's STS emulator, which "stsproxy
// demo token" and "stsproxy verify --issuer" reach.
var demoSTSFlag = flagSpec{name: "sts-listen-addr", def: defaultDemoSTSAddr,
	usage: "address of the demo's STS emulator, a loopback host:port; its issuer is http://ADDR"}

// demoAudienceUsage is the usage of --token-audience in the demo's commands.
const demoAudienceUsage = "audience of the tokens, which the demo's stsproxy inbound requires (repeatable; env is a comma list)"

// demoCommand is "stsproxy demo": the STS emulator, stsproxy, stsproxy
// inbound and an app behind it, in one foreground process.
var demoCommand = &command{
	name:     "stsproxy demo",
	synopsis: "stsproxy demo [flags]",
	summary:  "run an STS emulator, stsproxy, stsproxy inbound and an app, no AWS account needed",
	about: "Runs, in this one foreground process, an STS emulator and client -> stsproxy -> stsproxy inbound -> app: " +
		"stsproxy puts a token on each request, stsproxy inbound verifies it as a receiving API would and passes the " +
		"verified identity to the app as headers. It prints where each listens once stsproxy holds its first token. " +
		"Then, in another terminal: 'stsproxy demo request' sends a request through it, " +
		"'stsproxy demo token' prints a token from the emulator. " +
		"Ctrl-C or SIGTERM stops everything, as does the end of the parent process (a killed 'go run').",
	flags: []string{"listen-addr", "metrics-listen-addr", "token-audience", "token-signing-algorithm",
		"token-duration", "token-tag", "log-level", "log-format"},
	own: []flagSpec{demoSTSFlag},
	defaults: map[string]string{
		"listen-addr":         defaultDemoAddr,
		"metrics-listen-addr": defaultDemoMetricsAddr,
		"token-audience":      defaultDemoAudience,
		"log-format":          "text",
	},
	usage: map[string]string{
		"listen-addr":    "address the demo's stsproxy listens on, host:port",
		"token-audience": demoAudienceUsage,
	},
}

// demoRequestCommand is "stsproxy demo request": one request through a
// running demo, and what the app received.
var demoRequestCommand = &command{
	name:     "stsproxy demo request",
	synopsis: "stsproxy demo request [--listen-addr ADDR]",
	summary:  "send a request through a running demo and show the identity the app received",
	about: "Sends GET " + demoPath + " through the stsproxy of a running 'stsproxy demo' (waiting up to a minute for one " +
		"that is starting) and prints what the app behind stsproxy inbound received: the verified identity headers. " +
		"Exit status 0 only if a verified identity reached the app.",
	flags:    []string{"listen-addr"},
	defaults: map[string]string{"listen-addr": defaultDemoAddr},
	usage:    map[string]string{"listen-addr": "address the demo's stsproxy listens on, host:port"},
}

// demoTokenCommand is "stsproxy demo token": a token from the running demo's
// emulator, which "stsproxy verify" can check while the demo runs.
var demoTokenCommand = &command{
	name:     "stsproxy demo token",
	synopsis: "stsproxy demo token [--token-audience AUD...] [flags]",
	summary:  "print a token from a running demo's STS emulator",
	about: "Mints a token with the STS emulator of a running 'stsproxy demo' (waiting up to a minute for one that is starting) " +
		"and prints it on stdout, and nothing else. Unlike 'stsproxy token --local-sts', whose emulator and keys " +
		"stop with the command, the token can be verified while the demo runs:\n\n" +
		"  stsproxy demo token | stsproxy verify --allow-insecure-issuer --issuer http://" + defaultDemoSTSAddr + " -",
	flags: []string{"token-audience", "token-signing-algorithm", "token-duration", "token-tag", "log-level", "log-format"},
	own:   []flagSpec{demoSTSFlag},
	defaults: map[string]string{
		"token-audience": defaultDemoAudience,
		"log-format":     "text",
	},
	usage: map[string]string{"token-audience": demoAudienceUsage},
}

// runDemo implements "stsproxy demo" and dispatches "stsproxy demo request".
// The demo runs until ctx is done (Ctrl-C, SIGTERM) or its parent process
// goes away, as when "go run" is killed: it then stops everything, so no
// process and no port outlives it.
func runDemo(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "request":
			return runDemoRequest(ctx, args[1:], getenv, stdout, stderr)
		case "token":
			return runDemoToken(ctx, args[1:], getenv, stdout, stderr)
		}
	}
	cmd := demoCommand
	cfg, code := loadConfig(cmd, args, getenv, stdout, stderr)
	if cfg == nil {
		return code
	}
	stsAddr, err := demoSTSAddr(cfg)
	if err != nil {
		return configError(stderr, cmd, err.Error())
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

	var lc net.ListenConfig
	stsLn, err := lc.Listen(ctx, "tcp", stsAddr)
	if err != nil {
		return cmd.fail(stderr, 1, "listen on --sts-listen-addr: %v", err)
	}
	emu := ststest.NewUnstartedServer()
	emu.Listener = stsLn
	emu.Start()
	defer emu.Close()
	account := emu.AccountID
	if account == "" {
		account = ststest.DefaultAccountID
	}
	appLn, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return cmd.fail(stderr, 1, "listen for the app: %v", err)
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
		return cmd.fail(stderr, 1, "%v", err)
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
		return cmd.fail(stderr, 1, "stsproxy inbound: %v", err)
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
		return cmd.fail(stderr, 1, "%v", err)
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
	fmt.Fprintf(&b, "and without stsproxy, so without a token (401):\n  curl -sS -i http://%s%s\n", a.inbound, demoPath)
	fmt.Fprintf(&b, "and a token to verify yourself, as an API receiving it would:\n  %s\n\n", demoVerifyLine(issuer, goRun))
	fmt.Fprintf(&b, "Stop with Ctrl-C (or one SIGTERM): it stops everything.\n")
	return b.String()
}

// demoVerifyLine is the command line that prints a token from the demo's
// emulator and verifies it against the emulator's issuer.
func demoVerifyLine(issuer string, goRun bool) string {
	self := "stsproxy"
	if goRun {
		self = "go run ./cmd/stsproxy"
	}
	tok := self + " demo token"
	if issuer != "http://"+defaultDemoSTSAddr {
		tok += " --sts-listen-addr " + strings.TrimPrefix(issuer, "http://")
	}
	return tok + " | " + self + " verify --allow-insecure-issuer --issuer " + issuer + " -"
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
	cmd := demoRequestCommand
	cfg, code := loadConfig(cmd, args, getenv, stdout, stderr)
	if cfg == nil {
		return code
	}
	ctx, cancel := context.WithTimeout(ctx, demoWait)
	defer cancel()
	if err := waitForDemo(ctx, cmd, cfg.listenAddr, stderr); err != nil {
		return 1
	}
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+cfg.listenAddr+demoPath, nil)
	if err != nil {
		return cmd.fail(stderr, 1, "%v", err)
	}
	res, err := client.Do(req)
	if err != nil {
		return cmd.fail(stderr, 1, "%v", err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return cmd.fail(stderr, 1, "read the answer: %v", err)
	}
	fmt.Fprintf(stdout, "GET http://%s%s: %s\n\n%s", cfg.listenAddr, demoPath, res.Status, body)
	if res.StatusCode != http.StatusOK || res.Header.Get(demoVerifiedHeader) != "true" {
		return cmd.fail(stderr, 1, "no verified identity reached the app (%s)", res.Status)
	}
	return 0
}

// runDemoToken implements "stsproxy demo token": it waits for the demo's
// emulator to listen (up to demoWait), mints one token with it, as
// "stsproxy token" does with its own, and prints it.
func runDemoToken(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cmd := demoTokenCommand
	cfg, code := loadConfig(cmd, args, getenv, stdout, stderr)
	if cfg == nil {
		return code
	}
	addr, err := demoSTSAddr(cfg)
	if err != nil {
		return configError(stderr, cmd, err.Error())
	}
	wctx, cancel := context.WithTimeout(ctx, demoWait)
	defer cancel()
	if err := waitForDemo(wctx, cmd, addr, stderr); err != nil {
		return 1
	}
	cfg.sts = sts.New(sts.Options{
		Region:       ststest.DefaultRegion,
		Credentials:  credentials.NewStaticCredentialsProvider("AKIDSTSPROXYDEMO", "demo", ""), // the emulator checks none
		BaseEndpoint: aws.String("http://" + addr),
	})
	return printToken(ctx, cmd, cfg, stdout, stderr)
}

// demoSTSAddr returns the demo's --sts-listen-addr: a host:port on a
// loopback host, so the emulator never listens beyond the machine.
func demoSTSAddr(cfg *config) (string, error) {
	s, v := demoSTSFlag, cfg.flagString(demoSTSFlag.name)
	if err := checkListenAddr(v); err != nil {
		return "", invalid(s, v, "want a loopback host:port (%v)", err)
	}
	if host, _, _ := net.SplitHostPort(v); !stsauth.IsLoopbackHost(host) {
		return "", invalid(s, v, "want a loopback host:port, such as %s: the emulator mints tokens for anyone who asks", defaultDemoSTSAddr)
	}
	return v, nil
}

// waitForDemo waits until the demo listens on addr or ctx is done, saying
// so after a second; if none comes, it prints how to start one.
func waitForDemo(ctx context.Context, cmd *command, addr string, stderr io.Writer) error {
	err := waitListening(ctx, addr, func() {
		fmt.Fprintln(stderr, cmd.message(fmt.Sprintf("waiting up to %v for the demo on %s (start it with: stsproxy demo)", demoWait, addr)))
	})
	if err != nil {
		cmd.fail(stderr, 1, "no demo listening on %s: start one with: stsproxy demo", addr)
	}
	return err
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
