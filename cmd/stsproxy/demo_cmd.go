package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/stsauth/stsauth/ststest"
	"github.com/stsauth/stsauth/verify"
	"go.opentelemetry.io/otel/metric/noop"
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

	emu := ststest.NewServer()
	defer emu.Close()
	upLn, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintf(stderr, "stsproxy: demo: listen for the upstream: %v\n", err)
		return 1
	}
	account := emu.AccountID
	if account == "" {
		account = ststest.DefaultAccountID
	}
	vclient := &http.Client{Transport: &http.Transport{}}
	defer vclient.CloseIdleConnections()
	v, err := verify.New(verify.Config{
		Issuers:                      []verify.Issuer{{URL: emu.Issuer(), Account: account}},
		Audiences:                    cfg.audience.Values(),
		AllowInsecureLoopbackIssuers: true, // the emulator's issuer is http on loopback
		HTTPClient:                   vclient,
		MeterProvider:                noop.NewMeterProvider(),
		Logger:                       log,
	})
	if err != nil {
		upLn.Close()
		fmt.Fprintf(stderr, "stsproxy: demo: %v\n", err)
		return 1
	}
	up := &http.Server{Handler: demoUpstream(v, emu.Issuer()), ReadHeaderTimeout: readHeaderTimeout}
	upDone := make(chan struct{})
	go func() {
		defer close(upDone)
		_ = up.Serve(upLn)
	}()
	defer func() {
		_ = up.Close()
		<-upDone
	}()

	cfg.sts = emu.Client()
	cfg.upstreamHost = upLn.Addr().String()
	cfg.upstreamScheme = "http"
	cfg.onReady = func(addr, metricsAddr string) {
		fmt.Fprint(stdout, demoBanner(addr, metricsAddr, cfg.upstreamHost, emu.Issuer(), cfg.audience.Values(), runningUnderGoRun()))
	}

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

// demoBanner is what the demo prints once it is ready: what runs where, and
// what to run next.
func demoBanner(addr, metricsAddr, upstream, issuer string, audience []string, goRun bool) string {
	next := "stsproxy demo request"
	if goRun {
		next = "go run ./cmd/stsproxy demo request"
	}
	if addr != defaultDemoAddr {
		next += " --listen-addr " + addr
	}
	var b strings.Builder
	fmt.Fprintf(&b, "stsproxy demo is ready: an STS emulator, an upstream that verifies tokens, and stsproxy in front of it.\n\n")
	fmt.Fprintf(&b, "  proxy     http://%s (pinned to the upstream; token audience %s)\n", addr, strings.Join(audience, ","))
	fmt.Fprintf(&b, "  upstream  http://%s (checks each token against the issuer's keys)\n", upstream)
	fmt.Fprintf(&b, "  STS       %s (emulator: issuer, /.well-known/openid-configuration, /.well-known/jwks.json)\n", issuer)
	fmt.Fprintf(&b, "  metrics   http://%s/metrics\n\n", metricsAddr)
	fmt.Fprintf(&b, "Next, in another terminal:\n  %s\nor\n  %s\n\n", next, demoCurl(addr))
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
		fmt.Fprintf(stderr, "stsproxy: demo request: the token did not reach the upstream verified (%s)\n", res.Status)
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

// demoUpstream answers every request with a plain-text account of the
// token it carries: how it arrived, whether it verified (with package
// verify, as an API receiving it would) and its claims. It shows only the
// start of the JWT, never all of it: even an emulator's token is not
// printed whole.
func demoUpstream(v *verify.Verifier, issuer string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b strings.Builder
		fmt.Fprintf(&b, "The upstream received %s %s", r.Method, r.URL.Path)
		if via := r.Header.Get("Via"); via != "" {
			fmt.Fprintf(&b, " through stsproxy (Via: %s)", via)
		}
		b.WriteString(", with\n")
		auth := r.Header.Get("Authorization")
		raw, isBearer := strings.CutPrefix(auth, "Bearer ")
		status := http.StatusUnauthorized
		switch {
		case auth == "":
			b.WriteString("  no Authorization header.\n")
		case !isBearer:
			b.WriteString("  an Authorization header that is not a bearer token.\n")
		default:
			fmt.Fprintf(&b, "  Authorization: Bearer %s... (a JWT of %d bytes; the rest is not shown)\n\n", raw[:min(len(raw), 24)], len(raw))
			c, err := v.Verify(r.Context(), raw)
			if err != nil {
				fmt.Fprintf(&b, "The token is NOT verified: %v\n", err)
				break
			}
			var claims bytes.Buffer
			if err := json.Indent(&claims, c.Raw, "", "  "); err != nil {
				fmt.Fprintf(&b, "The token's claims do not print: %v\n", err)
				break
			}
			status = http.StatusOK
			fmt.Fprintf(&b, "The token is verified, by package verify as the API receiving it would: its signature\n")
			fmt.Fprintf(&b, "checks out against the keys %s publishes (found through its\n", issuer)
			fmt.Fprintf(&b, "/.well-known/openid-configuration), its audience is %s, its account %s,\n", strings.Join(c.Audience, ","), c.AWS.Account)
			fmt.Fprintf(&b, "and it expires in %v.\n\n", time.Until(c.Expiry).Round(time.Second))
			fmt.Fprintf(&b, "Its claims:\n%s\n", claims.String())
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set(demoVerifiedHeader, fmt.Sprint(status == http.StatusOK))
		w.WriteHeader(status)
		io.WriteString(w, b.String())
	})
}
