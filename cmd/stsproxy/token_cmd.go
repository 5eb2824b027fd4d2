package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"

	"github.com/stsauth/stsauth"
	"go.opentelemetry.io/otel/metric/noop"
)

// tokenFileFlagSpecs are the flags of "stsproxy token" alone: the token
// file. The proxy and the subcommands that take every flag neither accept
// nor validate them.
var tokenFileFlagSpecs = []flagSpec{
	{name: "output-file", usage: "write the token to this file, atomically (a temporary file renamed over it) with mode 0600, instead of stdout; its directory must exist"},
	{name: "output-format", def: outputJWT, usage: "how the token is written: jwt (the token alone) or json ({\"token\": ..., \"expiration\": RFC 3339}) (any case)"},
	{name: "refresh", kind: kindBool, def: "false", usage: "with --output-file: run until stopped, rewriting the file at each token refresh; it is removed before its token expires if no new one can be had, and on exit"},
}

// runToken implements "stsproxy token": it mints one token for the
// --token-audience set, honouring the token flags and --local-sts, and prints
// it to stdout, or writes it to --output-file. With --refresh it keeps that
// file holding a valid token until ctx is done (see tokenFile). It returns
// the exit code, like run.
func runToken(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cfg, code := loadConfig(tokenCommand, args, getenv, stdout, stderr)
	if cfg == nil {
		return code
	}
	if cfg.audience.IsZero() {
		return configError(stderr, tokenCommand, "missing --token-audience/TOKEN_AUDIENCE: want 1 to 10 audience values")
	}
	if cfg.refresh {
		log := newLogger(cfg, stderr)
		if err := keepTokenFile(ctx, cfg, log); err != nil {
			if ue, ok := errors.AsType[*usageError](err); ok {
				return configError(stderr, tokenCommand, ue.msg)
			}
			return tokenCommand.fail(stderr, 1, "%v", err)
		}
		return 0
	}
	return printToken(ctx, tokenCommand, cfg, stdout, stderr)
}

// printToken mints one token for cfg's audience set with the STS client cfg
// names (see newSTSClient) and prints it on stdout, or writes it to
// --output-file, for "stsproxy token" and "stsproxy demo token". This and
// the token file are the only places a token is ever printed or written. A
// failure to get the token is one line on stderr in cmd's shape, saying what
// was tried and what to do (stsauth.Explain); the error itself, and the
// token source's own records, are for --log-level debug. It returns the exit
// code.
func printToken(ctx context.Context, cmd *command, cfg *config, stdout, stderr io.Writer) int {
	log := newLogger(cfg, stderr)
	fail := func(err error) int {
		if ue, ok := errors.AsType[*usageError](err); ok {
			return configError(stderr, cmd, ue.msg)
		}
		log.Debug("token failed", "error", err.Error())
		return cmd.fail(stderr, 1, "%s (--log-level debug shows the error)", explainLine(err))
	}
	client, fallbacks, cleanup, err := newSTSClient(ctx, cfg, log)
	if err != nil {
		return fail(err)
	}
	defer cleanup()
	tsLog := slog.New(slog.DiscardHandler)
	if cfg.logLevel <= slog.LevelDebug {
		tsLog = log
	}
	ts, err := newTokenSource(cfg, client, noop.NewMeterProvider(), tsLog, stsauth.WithFallback(fallbacks...))
	if err != nil {
		return fail(err)
	}
	defer ts.Close()
	// Off AWS with no credentials this fails in about a second: the source
	// asks the credentials first (instance metadata bounded by
	// stsauth.IMDSTimeout) and makes no STS call without them.
	tok, err := ts.Token(ctx, cfg.audience)
	if err != nil {
		return fail(err)
	}
	if cfg.outputFile != "" {
		if err := newTokenFile(cfg.outputFile, cfg.outputFormat, log).write(tok); err != nil {
			return cmd.fail(stderr, 1, "%v", err)
		}
		return 0
	}
	out := tok.Value() + "\n"
	if cfg.outputFormat == outputJSON {
		b, _ := encodeToken(tok, outputJSON) // a string and a time always encode
		out = string(b)
	}
	if _, err := io.WriteString(stdout, out); err != nil {
		return cmd.fail(stderr, 1, "write the token: %v", err)
	}
	return 0
}

// keepTokenFile runs "stsproxy token --output-file PATH --refresh": it keeps
// PATH holding a valid token until ctx is done, then removes it. With
// --metrics-listen-addr it serves /healthz, /readyz (ready while the file
// holds a token) and the metrics there. It returns an error only for a
// runtime failure.
func keepTokenFile(ctx context.Context, cfg *config, log *slog.Logger) error {
	tel, err := newTelemetry(cfg.metricsListenAddr != "")
	if err != nil {
		return err
	}
	defer tel.shutdown(context.Background())
	client, fallbacks, closeSTS, err := newSTSClient(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer closeSTS()
	changed := make(chan struct{}, 1)
	hook := func(tok stsauth.Token) {
		if tok.Audience == cfg.audience {
			select {
			case changed <- struct{}{}:
			default: // a signal is pending: the writer reads the latest token
			}
		}
	}
	ts, err := newTokenSource(cfg, client, tel.provider, log, stsauth.WithTokenHook(hook), stsauth.WithFallback(fallbacks...))
	if err != nil {
		return fmt.Errorf("stsproxy: create token source: %w", err)
	}
	defer ts.Close()
	f := newTokenFile(cfg.outputFile, cfg.outputFormat, log)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var adminErr error
	adminDone := make(chan struct{})
	if cfg.metricsListenAddr != "" {
		var lc net.ListenConfig
		ln, err := lc.Listen(ctx, "tcp", cfg.metricsListenAddr)
		if err != nil {
			return fmt.Errorf("stsproxy: listen on --metrics-listen-addr: %w", err)
		}
		admin := newAdminServer(cfg, tel.handler, f.holds.Load, log)
		go func() {
			defer close(adminDone)
			adminErr = admin.Serve(ln)
			cancel()
		}()
		defer func() {
			sctx, cancelShutdown := context.WithTimeout(context.Background(), cfg.shutdownTimeout)
			defer cancelShutdown()
			if err := admin.Shutdown(sctx); err != nil {
				admin.Close()
			}
		}()
		log.Info("listening", "metrics_addr", ln.Addr().String())
	} else {
		close(adminDone)
	}
	logTokenSettings(log, cfg)
	f.keep(ctx, ts, cfg.audience, changed)
	log.Info("stopped")
	select {
	case <-adminDone: // none, or it failed and stopped keep
		if adminErr != nil {
			return fmt.Errorf("stsproxy: serve: %w", adminErr)
		}
	default: // stopped by ctx; the deferred Shutdown ends it
	}
	return nil
}
