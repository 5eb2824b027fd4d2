// Command stsproxy is an outbound HTTP proxy that attaches an AWS STS web
// identity token (Authorization: Bearer <jwt>, or --token-header and
// --token-format) to every request it forwards. It is a drop-in replacement
// for aws-outbound-jwt-proxy: the same flags, environment variables and
// metric names, plus an upstream allowlist, session tags and graceful
// shutdown.
//
// "stsproxy help" lists the subcommands and the proxy's flags, "stsproxy help
// COMMAND" a subcommand's: "token" prints one token, or keeps a file holding
// a valid one; "demo" runs an STS emulator, the proxy, "inbound" and an app in
// one process, "demo request" sends a request through it and "demo token"
// prints a token from its emulator; "verify" verifies a token and prints its
// claims; "inbound", the receiving side, verifies each request's token and
// forwards the request with the verified identity as headers; "policy" prints
// the least-privilege IAM policy for the proxy's flags; "doctor" checks the
// setup and prints the fix for each failure; "healthcheck" asks a running
// proxy for /healthz; "version" prints the version.
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
