package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/stsauth/stsauth"
	"github.com/stsauth/stsauth/ststest"
	"go.opentelemetry.io/otel/metric"
)

// Server limits. The proxy's clients are local workloads, so these guard
// against stuck or abusive connections rather than tune throughput.
const (
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 120 * time.Second
	maxHeaderBytes    = 64 << 10

	// primeBackoffMin and primeBackoffMax bound the wait between attempts
	// to fetch the static audience's token at start.
	primeBackoffMin = 200 * time.Millisecond
	primeBackoffMax = 10 * time.Second
)

// version is the stsproxy version, set at build time with
// -ldflags "-X main.version=v1.2.3"; empty falls back to the module version.
var version = ""

// versionString returns the version to print for --version.
func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

// run is the whole program behind main, with its inputs and outputs passed
// in so tests can drive it. It returns the exit code: 0 on success, 1 on a
// runtime failure, 2 on bad configuration.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "token":
			return runToken(ctx, args[1:], getenv, stdout, stderr)
		case "demo":
			return runDemo(ctx, args[1:], getenv, stdout, stderr)
		case "inbound":
			return runInbound(ctx, args[1:], getenv, stdout, stderr)
		case "version":
			return runVersion(args[1:], stdout, stderr)
		case "policy":
			return runPolicy(args[1:], getenv, stdout, stderr)
		case "healthcheck":
			return runHealthcheck(ctx, args[1:], getenv, stdout, stderr)
		case "verify":
			return runVerify(ctx, args[1:], getenv, os.Stdin, stdout, stderr)
		case "doctor":
			return runDoctor(ctx, args[1:], getenv, stdout, stderr)
		case "help":
			return runHelp(args[1:], stdout, stderr)
		}
		if !strings.HasPrefix(args[0], "-") {
			return configError(stderr, proxyCommand, fmt.Sprintf("unknown command %q: want one of %s, or flags", args[0], commandNames()))
		}
	}
	cfg, code := loadConfig(proxyCommand, args, getenv, stdout, stderr)
	if cfg == nil {
		return code
	}
	if cfg.version {
		fmt.Fprintln(stdout, "stsproxy", versionString())
		return 0
	}
	log := newLogger(cfg, stderr)
	if err := serve(ctx, cfg, log); err != nil {
		if ue, ok := errors.AsType[*usageError](err); ok {
			// Found invalid only once the AWS configuration was loaded.
			return configError(stderr, proxyCommand, ue.msg)
		}
		if errors.Is(err, stsauth.ErrNoRegion) {
			// What was tried and what to do, in the record's own words.
			log.Error("stsproxy failed", "error", noRegionMessage(err))
			return 1
		}
		log.Error("stsproxy failed", "error", err.Error())
		return 1
	}
	return 0
}

// runVersion implements "stsproxy version", the same as --version.
func runVersion(args []string, stdout, stderr io.Writer) int {
	if cfg, code := loadConfig(versionCommand, args, noEnv, stdout, stderr); cfg == nil {
		return code
	}
	fmt.Fprintln(stdout, "stsproxy", versionString())
	return 0
}

// noEnv is the environment of the commands that read none.
func noEnv(string) string { return "" }

// loadConfig parses cmd's configuration: its help on stdout for --help, the
// one-line error and a pointer to --help on failure. A nil config comes with
// the exit code to return.
func loadConfig(cmd *command, args []string, getenv func(string) string, stdout, stderr io.Writer) (*config, int) {
	cfg, err := parseCommandConfig(cmd, args, getenv)
	if errors.Is(err, flag.ErrHelp) {
		writeCommandUsage(stdout, cmd)
		return nil, 0
	}
	if err != nil {
		return nil, configError(stderr, cmd, err.Error())
	}
	return cfg, 0
}

// configError prints a configuration error as one line in the command's
// shape ([command.message]), then where to find its help, and returns exit
// code 2. The whole usage would bury the one line that matters.
func configError(stderr io.Writer, cmd *command, msg string) int {
	fmt.Fprintf(stderr, "%s\nRun '%s --help' for usage.\n", cmd.message(msg), cmd.name)
	return 2
}

// newLogger returns the JSON or text logger at the configured level.
func newLogger(cfg *config, w io.Writer) *slog.Logger {
	if cfg.logOut == nil {
		cfg.logOut = w // the access log writes there too, in batches
	}
	opts := &slog.HandlerOptions{Level: cfg.logLevel}
	if cfg.logFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// newSTSClient returns the STS client: the one "stsproxy demo" set, the
// in-process emulator with --local-sts, else one from the default AWS
// configuration chain (see loadAWS; it honours AWS_ENDPOINT_URL_STS). With
// --sts-fallback-regions it also returns one client per fallback Region,
// with the same credentials, for stsauth.WithFallback. The caller must call
// cleanup.
func newSTSClient(ctx context.Context, cfg *config, log *slog.Logger) (client stsauth.GetWebIdentityTokenAPIClient, fallbacks []stsauth.GetWebIdentityTokenAPIClient, cleanup func(), err error) {
	if cfg.sts != nil {
		return cfg.sts, nil, func() {}, nil
	}
	if cfg.localSTS {
		srv := ststest.NewServer()
		log.Warn("local STS emulator started: its tokens are for local development only",
			"issuer", srv.Issuer(), "jwks_url", srv.JWKSURL())
		// The fallback Regions reach the same emulator under their own
		// names: one issuer and one key set, as in AWS, so a configuration
		// with fallbacks runs unchanged and its tokens verify; a failover
		// cannot be provoked there.
		for _, f := range cfg.fallbackRegions {
			fallbacks = append(fallbacks, srv.Client(func(o *sts.Options) { o.Region = f.region }))
		}
		return srv.Client(), fallbacks, srv.Close, nil
	}
	awsCfg, src, err := loadAWS(ctx, cfg)
	if err != nil {
		return nil, nil, nil, err
	}
	log.Debug("AWS region", "region", awsCfg.Region, "source", string(src))
	if fallbacks, err = fallbackClients(cfg, awsCfg, src); err != nil {
		return nil, nil, nil, err
	}
	if len(fallbacks) > 0 {
		names := make([]string, len(cfg.fallbackRegions))
		for i, f := range cfg.fallbackRegions {
			names[i] = f.region
		}
		log.Info("STS fallback regions", "primary", awsCfg.Region, "fallback_regions", strings.Join(names, ","))
	}
	return sts.NewFromConfig(awsCfg), fallbacks, func() {}, nil
}

// fallbackClients returns one STS client per --sts-fallback-regions entry,
// from awsCfg (the same credentials) with the entry's Region and endpoint:
// its own URL if given, else the Region's standard endpoint, never the
// primary's AWS_ENDPOINT_URL_STS, which names one Region's endpoint. It
// fails, as a configuration error, if an entry is the primary Region, which
// came from src.
func fallbackClients(cfg *config, awsCfg aws.Config, src stsauth.RegionSource) ([]stsauth.GetWebIdentityTokenAPIClient, error) {
	var out []stsauth.GetWebIdentityTokenAPIClient
	for _, f := range cfg.fallbackRegions {
		if f.region == awsCfg.Region {
			return nil, invalid(flagSpecNamed("sts-fallback-regions"), f.region, "want Regions other than the primary, %s (from %s)", awsCfg.Region, src)
		}
		out = append(out, sts.NewFromConfig(awsCfg, func(o *sts.Options) {
			o.Region = f.region
			o.BaseEndpoint = nil
			if f.endpoint != "" {
				o.BaseEndpoint = aws.String(f.endpoint)
			}
		}))
	}
	return out, nil
}

// newTokenSource builds the library's token source from the configuration.
func newTokenSource(cfg *config, client stsauth.GetWebIdentityTokenAPIClient, mp metric.MeterProvider, log *slog.Logger, extra ...stsauth.Option) (*stsauth.TokenSource, error) {
	return stsauth.NewTokenSource(client, append([]stsauth.Option{
		stsauth.WithSigningAlgorithm(cfg.signingAlg),
		stsauth.WithDuration(cfg.duration),
		stsauth.WithRefreshSkew(cfg.refreshSkew),
		stsauth.WithTags(cfg.tags),
		stsauth.WithCacheSize(cfg.cacheSize),
		stsauth.WithMaxConcurrentFetches(cfg.maxFetches),
		stsauth.WithMeterProvider(mp),
		stsauth.WithLogger(log),
		stsauth.WithFetchTimeout(cfg.fetchTimeout),
		stsauth.WithMintRate(cfg.mintRate, cfg.mintBurst),
		stsauth.WithCacheChurnFunc(func(evictions int, window time.Duration) {
			log.Warn("token cache churning: upstreams are evicted to make room for others and cost an STS call each when they return; raise --token-cache-size/TOKEN_CACHE_SIZE",
				"evictions", evictions, "window", window.String(), "token_cache_size", cfg.cacheSize)
		}),
	}, extra...)...)
}

// serve runs the proxy and admin listeners until ctx is done, then shuts
// down gracefully. It returns an error only for a runtime failure.
func serve(ctx context.Context, cfg *config, log *slog.Logger) error {
	tel, pm, err := newServerTelemetry(cfg)
	if err != nil {
		return err
	}
	defer tel.shutdown(context.Background())
	client, fallbacks, closeSTS, err := newSTSClient(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer closeSTS()
	ts, err := newTokenSource(cfg, client, tel.provider, log, stsauth.WithFallback(fallbacks...))
	if err != nil {
		return fmt.Errorf("stsproxy: create token source: %w", err)
	}
	defer ts.Close()

	base := newBaseTransport(cfg)
	if cfg.dialUpstream != nil {
		base.DialContext = cfg.dialUpstream
	}
	defer base.CloseIdleConnections()
	tr := &stsauth.Transport{Source: ts, Base: base, AllowedHosts: cfg.allowed, RequireTLS: cfg.requireTLS,
		Header: cfg.tokenHeader, Format: cfg.tokenFormat}
	if !cfg.audience.IsZero() {
		tr.Audience = stsauth.FixedAudience(cfg.audience)
	} else {
		// Only a derived audience can fail to resolve; mark its errors
		// for the token_result metric attribute.
		tr.Audience = markedResolver{next: stsauth.HostAudience{}}
	}
	logStartupWarnings(cfg, log)
	logForwardProxy(cfg, log, base.Proxy)
	px := newProxy(cfg, &instrumentedTransport{next: tr, metrics: pm}, log, pm)
	mode := serverMode{
		handler:  px,
		upgrades: &px.upgrades,
		// Ready while the static audience's token is served (not in its
		// hard expiry margin), once it was first fetched.
		ready:       func() bool { return cfg.audience.IsZero() || ts.Holds(cfg.audience) },
		listenAttrs: []any{"upstream_host", cfg.upstreamHost, "host_header", cfg.hostHeader},
		started:     func() { logTokenSettings(log, cfg) },
	}
	if !cfg.audience.IsZero() {
		mode.prime = func(ctx context.Context) bool { return primeUntilReady(ctx, tr, log) }
	}
	stopLog := px.asyncAccessLog(cfg, cfg.logOut)
	serveErr := runServer(ctx, cfg, log, tel, mode)
	stopLog()
	if err := ts.Close(); err != nil {
		log.Warn("close token source", "error", err.Error())
	}
	log.Info("stopped")
	return serveErr
}

// newServerTelemetry returns the metrics pipeline of a server mode and the
// request instruments every mode has. The caller must shut tel down.
func newServerTelemetry(cfg *config) (tel *telemetry, pm *proxyMetrics, err error) {
	if tel, err = newTelemetry(cfg.metricsEnabled); err != nil {
		return nil, nil, err
	}
	if pm, err = newProxyMetrics(tel.provider); err != nil {
		_ = tel.shutdown(context.Background())
		return nil, nil, err
	}
	return tel, pm, nil
}

// serverMode is what one server mode (the outbound proxy, stsproxy inbound)
// hands [runServer], the wiring they share.
type serverMode struct {
	handler http.Handler // serves --listen-addr
	// upgrades counts upgraded (hijacked) connections in flight, which
	// http.Server.Shutdown does not wait for; shutdown waits on it.
	upgrades *sync.WaitGroup
	// prime, if set, runs once listening, until it returns or shutdown
	// begins, and reports whether the mode became ready; /readyz answers
	// 503 until it has returned true. A nil prime is ready at once.
	prime func(ctx context.Context) bool
	// ready, if set, is asked on every /readyz once primed: whether the
	// mode can serve now.
	ready func() bool
	// listenAttrs are extra attributes of the "listening" record.
	listenAttrs []any
	// started, if set, runs after the "listening" record, for more startup
	// records.
	started func()
}

// runServer serves mode.handler on --listen-addr (TLS with --tls-cert) and,
// with metrics enabled, /healthz, /readyz and the metrics on
// --metrics-listen-addr, until ctx is done; then it drains: /readyz answers
// 503, the listeners keep serving for --shutdown-delay, in-flight requests
// get --shutdown-timeout to finish, and upgraded connections still open
// after it are closed. It returns an error only for
// a runtime failure. It is the wiring the outbound proxy and stsproxy
// inbound share.
func runServer(ctx context.Context, cfg *config, log *slog.Logger, tel *telemetry, mode serverMode) error {
	errLog := slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	// Requests get a base context that is cancelled when the shutdown
	// deadline passes: ReverseProxy closes an upgraded connection when its
	// request's context ends, and Shutdown does not close hijacked ones.
	baseCtx, cancelBase := context.WithCancel(context.Background())
	defer cancelBase()
	var primed, draining atomic.Bool
	srv := &http.Server{
		Handler:           closeWhileDraining(mode.handler, &draining),
		BaseContext:       func(net.Listener) context.Context { return baseCtx },
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          errLog,
	}
	if cfg.tlsCert != nil {
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{*cfg.tlsCert}, MinVersion: tls.VersionTLS12}
	}

	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", cfg.listenAddr)
	if err != nil {
		return fmt.Errorf("stsproxy: listen on --listen-addr: %w", err)
	}
	// With metrics disabled there is no admin listener at all, as in
	// aws-outbound-jwt-proxy: /healthz and /readyz go with it.
	var adminLn net.Listener
	if cfg.metricsEnabled {
		adminLn, err = lc.Listen(ctx, "tcp", cfg.metricsListenAddr)
		if err != nil {
			ln.Close()
			return fmt.Errorf("stsproxy: listen on --metrics-listen-addr: %w", err)
		}
	}

	if mode.prime == nil {
		primed.Store(true) // nothing to prefetch: ready once listening
	}
	admin := newAdminServer(cfg, tel.handler, func() bool {
		return primed.Load() && !draining.Load() && (mode.ready == nil || mode.ready())
	}, log)

	// Serve modifies srv.TLSConfig (HTTP/2 setup), so decide TLS from the
	// config and never read srv.TLSConfig after Serve starts.
	useTLS := cfg.tlsCert != nil
	errc := make(chan error, 2)
	go func() {
		if useTLS {
			errc <- srv.ServeTLS(ln, "", "")
			return
		}
		errc <- srv.Serve(ln)
	}()
	metricsAddr := "" // none: metrics disabled
	if adminLn != nil {
		metricsAddr = adminLn.Addr().String()
		go func() { errc <- admin.Serve(adminLn) }()
	}
	log.Info("listening", append([]any{"addr", ln.Addr().String(), "metrics_addr", metricsAddr, "tls", useTLS}, mode.listenAttrs...)...)
	if mode.started != nil {
		mode.started()
	}

	primeCtx, cancelPrime := context.WithCancel(ctx)
	primeDone := make(chan struct{})
	go func() {
		defer close(primeDone)
		if mode.prime != nil && mode.prime(primeCtx) {
			primed.Store(true)
		}
		if cfg.onReady != nil && primed.Load() {
			cfg.onReady(ln.Addr().String(), metricsAddr)
		}
	}()

	var serveErr error
	select {
	case <-ctx.Done():
		draining.Store(true)
		if err := drainDelay(cfg.shutdownDelay, errc, log); err != nil {
			serveErr = fmt.Errorf("stsproxy: serve: %w", err)
		}
		log.Info("shutting down", "timeout", cfg.shutdownTimeout.String())
	case err := <-errc:
		serveErr = fmt.Errorf("stsproxy: serve: %w", err)
	}
	draining.Store(true)
	cancelPrime()
	<-primeDone

	sctx, cancel := context.WithTimeout(context.Background(), cfg.shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("in-flight requests did not finish within --shutdown-timeout; closing them", "error", err.Error())
		cancelBase()
		srv.Close()
	} else if mode.upgrades != nil && !waitUpgrades(sctx, mode.upgrades) {
		log.Warn("upgraded connections still open at --shutdown-timeout; closing them")
		cancelBase()
	}
	if adminLn != nil {
		if err := admin.Shutdown(sctx); err != nil {
			admin.Close()
		}
	}
	return serveErr
}

// drainDelay runs the shutdown delay: /readyz already answers 503, while the
// listeners keep serving for delay, so the endpoint controller or load
// balancer stops routing new connections here before any is refused. It
// returns early with a listener's error.
func drainDelay(delay time.Duration, errc <-chan error, log *slog.Logger) error {
	if delay <= 0 {
		return nil
	}
	log.Info("draining: not ready, still serving until --shutdown-delay ends", "delay", delay.String())
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case err := <-errc:
		return err
	}
}

// closeWhileDraining asks each client to close its connection after the
// response once draining starts ("Connection: close"; a GOAWAY over
// HTTP/2), so keep-alive clients reconnect to an instance that stays while
// this one still answers, rather than meet the shutdown on an idle
// connection. Upgrade requests are left alone: their response must say
// "Connection: Upgrade".
func closeWhileDraining(next http.Handler, draining *atomic.Bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if draining.Load() && r.Header.Get("Upgrade") == "" {
			w.Header().Set("Connection", "close")
		}
		next.ServeHTTP(w, r)
	})
}

// logTokenSettings logs the effective token settings: the audiences in use
// (an empty TOKEN_AUDIENCE= means "derived per request", which the log
// shows) and the refresh skew (when the default skew does not fit
// --token-duration it is halved), which the user should not have to guess.
func logTokenSettings(log *slog.Logger, cfg *config) {
	attrs := []any{"duration", cfg.duration.String(), "refresh_skew", cfg.refreshSkew.String(),
		"signing_algorithm", cfg.signingAlg, "audience", audienceInUse(cfg)}
	if cfg.tokenHeader != stsauth.DefaultHeader || cfg.tokenFormat != stsauth.DefaultFormat {
		attrs = append(attrs, "token_header", cfg.tokenHeader, "token_format", cfg.tokenFormat)
	}
	if cfg.skewHalved {
		attrs = append(attrs, "refresh_skew_rule", "default 5m does not fit --token-duration: half the duration")
	}
	log.Info("token settings", attrs...)
}

// audienceInUse describes, for the startup log, the audiences of the
// proxy's tokens: the static --token-audience set, or how each request's is
// derived.
func audienceInUse(cfg *config) string {
	switch {
	case !cfg.audience.IsZero():
		return strings.Join(cfg.audience.Values(), ",")
	case cfg.upstreamHost != "":
		if aud, err := stsauth.OriginAudience(cfg.upstreamScheme, cfg.upstreamHost); err == nil {
			return aud.Values()[0] + " (no --token-audience/TOKEN_AUDIENCE: derived from --upstream-host)"
		}
	}
	return "<scheme>://<host> of each request's upstream (no --token-audience/TOKEN_AUDIENCE: derived per request)"
}

// logStartupWarnings logs, once at startup, the ways this configuration lets
// a token reach a host or a network it might not be meant for.
func logStartupWarnings(cfg *config, log *slog.Logger) {
	if !cfg.listenLoopback() && !cfg.remoteClients {
		// Whoever reaches the listener sends requests with tokens of the
		// proxy's IAM role: on a pod IP that is any pod in the cluster.
		log.Warn("--listen-addr is not a loopback address: anyone who can reach it acts with this proxy's IAM role; "+
			"listen on 127.0.0.1 when the clients are local (a sidecar), or set --allow-remote-clients/ALLOW_REMOTE_CLIENTS for a shared proxy whose network policy decides who reaches it",
			"listen_addr", cfg.listenAddr)
	}
	if cfg.upstreamHost == "" && cfg.allowed == nil {
		log.Warn("no --allowed-hosts/ALLOWED_HOSTS: clients can direct tokens to any host", "host_header", cfg.hostHeader)
	}
	if cfg.upstreamScheme == "http" && !cfg.requireTLS {
		switch {
		case cfg.upstreamHost == "":
			log.Warn("--upstream-scheme http: tokens to upstreams that are not loopback addresses cross the network in clear text; use https or set --require-tls-upstream/REQUIRE_TLS_UPSTREAM",
				"host_header", cfg.hostHeader)
		case !cfg.upstreamLoopback():
			log.Warn("--upstream-scheme http: tokens cross the network to the upstream in clear text; use https or set --require-tls-upstream/REQUIRE_TLS_UPSTREAM",
				"upstream_host", cfg.upstreamHost)
		}
	}
}

// probeHost stands for the upstream when clients choose it: a name no
// NO_PROXY entry but a catch-all matches.
const probeHost = "upstream.invalid"

// logForwardProxy logs, once at startup, whether the forward proxy of the
// environment (HTTPS_PROXY, HTTP_PROXY, NO_PROXY) applies to upstream
// requests, as proxy (the base transport's guarded Proxy function) decides.
// Over https requests tunnel through it and it never sees the token; over
// plain http the library refuses them rather than hand it the token in clear
// text. Only the forward proxy's host is logged, never its credentials.
func logForwardProxy(cfg *config, log *slog.Logger, proxy func(*http.Request) (*url.URL, error)) {
	if proxy == nil {
		return
	}
	host, scope := cfg.upstreamHost, "the upstream"
	if host == "" {
		host, scope = probeHost, "upstreams that NO_PROXY does not exclude"
	}
	u, err := proxy(&http.Request{URL: &url.URL{Scheme: cfg.upstreamScheme, Host: host}, Header: http.Header{}})
	switch {
	case errors.Is(err, stsauth.ErrCleartext):
		log.Warn("a forward proxy applies to "+scope+" over plain http: those requests are refused (403) rather than send the token to the forward proxy in clear text; use --upstream-scheme https, or exclude the upstream with NO_PROXY",
			"upstream_host", cfg.upstreamHost)
	case err != nil:
		log.Warn("forward proxy configuration", "error", err.Error())
	case u != nil:
		log.Info("a forward proxy applies to "+scope+": requests tunnel through it (CONNECT), so it sees the upstream's host but not the token",
			"forward_proxy", u.Host, "upstream_host", cfg.upstreamHost)
	}
}

// waitUpgrades waits for upgraded connections to close, until ctx ends. It
// reports whether they all closed. Shutdown has returned, so no request can
// start an upgrade any more.
func waitUpgrades(ctx context.Context, upgrades *sync.WaitGroup) bool {
	done := make(chan struct{})
	go func() {
		upgrades.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	}
}

// primeUntilReady fetches the static audience's token, retrying with capped
// exponential backoff until it succeeds or ctx is done, so /readyz turns
// ready only once requests can be served without waiting on STS. It reports
// whether it succeeded.
func primeUntilReady(ctx context.Context, tr *stsauth.Transport, log *slog.Logger) bool {
	return retryUntil(ctx, log, "token prefetch failed; retrying", func(ctx context.Context) error {
		if err := tr.Prime(ctx); err != nil {
			return err
		}
		log.Info("token ready")
		return nil
	})
}

// retryUntil calls try until it returns nil or ctx is done, waiting between
// attempts with capped exponential backoff (primeBackoffMin to
// primeBackoffMax) and logging each failure as msg. It reports whether try
// succeeded.
func retryUntil(ctx context.Context, log *slog.Logger, msg string, try func(context.Context) error) bool {
	wait := primeBackoffMin
	for {
		err := try(ctx)
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		log.Warn(msg, "error", err.Error(), "retry_in", wait.String())
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
		wait = min(2*wait, primeBackoffMax)
	}
}

// newAdminServer returns the admin listener's server: [adminHandler] with
// the server limits.
func newAdminServer(cfg *config, metrics http.Handler, ready func() bool, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           adminHandler(cfg, metrics, ready),
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// adminHandler serves /healthz (alive), /readyz (ready to serve) and, when
// metrics are enabled, the metrics path. It matches paths exactly rather
// than through ServeMux patterns, so no --metrics-path value can make it
// panic.
func adminHandler(cfg *config, metrics http.Handler, ready func() bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/healthz":
			fmt.Fprintln(w, "ok")
		case r.URL.Path == "/readyz":
			if !ready() {
				http.Error(w, "not ready", http.StatusServiceUnavailable)
				return
			}
			fmt.Fprintln(w, "ready")
		case metrics != nil && r.URL.Path == cfg.metricsPath:
			metrics.ServeHTTP(w, r)
		default:
			http.NotFound(w, r)
		}
	})
}
