// Command stsproxy is an outbound HTTP proxy that attaches an AWS STS web
// identity token (Authorization: Bearer <jwt>) to every request it forwards.
// It is a drop-in replacement for aws-outbound-jwt-proxy: the same flags,
// environment variables and metric names, plus an upstream allowlist, session
// tags and graceful shutdown.
//
// Run "stsproxy --help" for the flags. "stsproxy token --token-audience A"
// prints one token and exits; "stsproxy policy" prints the least-privilege
// IAM policy for the same flags; "stsproxy healthcheck" asks a running
// proxy's admin listener for /healthz, for container health checks;
// "stsproxy verify --issuer URL [TOKEN|-]" verifies a token and prints its
// claims; "stsproxy doctor" checks the setup (region, credentials, IAM,
// federation, issuer keys) and prints the fix for each failure; "stsproxy
// demo" runs an STS emulator, a verifying upstream and the proxy in one
// process, and "stsproxy demo request" sends one request through it;
// "stsproxy version" prints the version.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

// main is a thin shell around run, so everything but signal wiring and the
// process exit is testable.
func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
