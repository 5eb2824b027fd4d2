package main

import (
	"context"
	"fmt"
	"io"

	"go.opentelemetry.io/otel/metric/noop"
)

// runToken implements "stsproxy token": it mints one token for the
// --token-audience set, honouring the token flags and --local-sts, and prints
// it to stdout. This is the only place a token is ever printed. It returns
// the exit code, like run.
func runToken(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cfg, code := loadConfig(tokenCommand, args, getenv, stdout, stderr)
	if cfg == nil {
		return code
	}
	if cfg.audience.IsZero() {
		return configError(stderr, tokenCommand, "token: missing --token-audience/TOKEN_AUDIENCE: want 1 to 10 audience values")
	}
	log := newLogger(cfg, stderr)
	client, cleanup, err := newSTSClient(ctx, cfg, log)
	if err != nil {
		log.Error("token failed", "error", err.Error())
		return 1
	}
	defer cleanup()
	ts, err := newTokenSource(cfg, client, noop.NewMeterProvider(), log)
	if err != nil {
		log.Error("token failed", "error", err.Error())
		return 1
	}
	defer ts.Close()
	tok, err := ts.Token(ctx, cfg.audience)
	if err != nil {
		log.Error("token failed", "error", err.Error())
		return 1
	}
	if _, err := fmt.Fprintln(stdout, tok.Value()); err != nil {
		log.Error("write token", "error", err.Error())
		return 1
	}
	return 0
}
