package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/stsauth/stsauth/verify"
)

// verifyCommand is "stsproxy verify". Its flags are those of "stsproxy
// inbound" that name whom to trust, with the same environment variables.
var verifyCommand = &command{
	name:     "stsproxy verify",
	synopsis: "stsproxy verify --issuer URL [--audience AUD...] [--allow-insecure-issuer] [TOKEN|-]",
	summary:  "verify a token as a receiving API would, and print its claims",
	about: "Verifies a token as an API receiving it would, with package verify: its signature against the keys " +
		"the issuer publishes (found through <issuer>/.well-known/openid-configuration), its issuer, its times and " +
		"its audience; then prints its claims as JSON on stdout, never the token. " +
		"The token is TOKEN, or stdin when TOKEN is - or absent (which keeps it out of shell history); " +
		"a leading \"Bearer \" is dropped. Exit status 0 if it verifies, 1 if not, 2 for bad usage.",
	flags: []string{"issuer", "audience", "allow-insecure-issuer"}, // those of stsproxy inbound, the other verifying side
	usage: map[string]string{
		"issuer":                "trusted issuer URL, exactly as the token's iss claim, such as https://<id>.tokens.sts.global.api.aws (required; repeatable; env is a comma list)",
		"audience":              "accepted audience (repeatable; env is a comma list); if absent, any audience passes",
		"allow-insecure-issuer": "trust an http issuer on a loopback host, such as the emulator of 'stsproxy demo' or 'stsproxy --local-sts'",
	},
	args: 1,
}

// runVerify implements "stsproxy verify": it verifies one token with
// package verify, against the issuer's published keys, and prints its
// claims as indented JSON on stdout; never the token. The token is the
// argument, or stdin when the argument is "-" or absent (better: it stays
// out of shell history and the process list); a leading "Bearer " is
// dropped. Without --audience any audience passes. It returns 0 when the
// token verifies, 1 when it does not, 2 on bad usage.
func runVerify(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int {
	cmd := verifyCommand
	c, code := loadConfig(cmd, args, getenv, stdout, stderr)
	if c == nil {
		return code
	}
	issuers, audiences := c.flagList("issuer"), c.flagList("audience")
	if len(issuers) == 0 {
		return configError(stderr, cmd, "missing --issuer: name the issuer whose keys verify the token")
	}
	cfg := verify.Config{
		Audiences:                    audiences,
		SkipAudienceCheck:            len(audiences) == 0,
		AllowInsecureLoopbackIssuers: c.flagBool("allow-insecure-issuer"),
		Logger:                       slog.New(slog.NewTextHandler(io.Discard, nil)), // the error is printed below
	}
	for _, iss := range issuers {
		cfg.Issuers = append(cfg.Issuers, verify.Issuer{URL: iss})
	}
	v, err := verify.New(cfg)
	if err != nil {
		msg := err.Error()
		if strings.Contains(msg, "AllowInsecureLoopbackIssuers") {
			msg = fmt.Sprintf("--issuer %q is http: add --allow-insecure-issuer to trust a loopback test issuer", issuersOf(cfg))
		}
		return configError(stderr, cmd, msg)
	}

	var raw string
	if len(c.args) > 0 {
		raw = c.args[0]
	}
	if raw == "" || raw == "-" {
		b, err := io.ReadAll(io.LimitReader(stdin, verify.MaxTokenSize+1))
		if err != nil {
			return cmd.fail(stderr, 1, "read token from stdin: %v", err)
		}
		raw = string(b)
	}
	raw = strings.TrimSpace(raw)
	if scheme, tok, ok := strings.Cut(raw, " "); ok && strings.EqualFold(scheme, "Bearer") {
		raw = strings.TrimSpace(tok)
	}

	claims, err := v.Verify(ctx, raw)
	if err != nil {
		return cmd.fail(stderr, 1, "%v", err)
	}
	out, err := json.MarshalIndent(json.RawMessage(claims.Raw), "", "  ")
	if err != nil {
		return cmd.fail(stderr, 1, "format claims: %v", err)
	}
	if _, err := fmt.Fprintf(stdout, "%s\n", out); err != nil {
		return cmd.fail(stderr, 1, "write claims: %v", err)
	}
	return 0
}

// issuersOf returns the issuer URLs of cfg joined by commas, for messages.
func issuersOf(cfg verify.Config) string {
	urls := make([]string, len(cfg.Issuers))
	for i, is := range cfg.Issuers {
		urls[i] = is.URL
	}
	return strings.Join(urls, ",")
}
