package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/stsauth/stsauth/verify"
)

// verifySynopsis is the usage line of "stsproxy verify".
const verifySynopsis = "stsproxy verify --issuer URL [--audience AUD...] [--allow-insecure-issuer] [TOKEN|-]"

// runVerify implements "stsproxy verify": it verifies one token with
// package verify, against the issuer's published keys, and prints its
// claims as indented JSON on stdout; never the token. The token is the
// argument, or stdin when the argument is "-" or absent (better: it stays
// out of shell history and the process list); a leading "Bearer " is
// dropped. Without --audience any audience passes. It returns 0 when the
// token verifies, 1 when it does not, 2 on bad usage.
func runVerify(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("stsproxy verify", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var issuers, audiences stringsFlag
	fs.Var(&issuers, "issuer", "trusted issuer URL, exactly as the token's iss claim; repeat for several")
	fs.Var(&audiences, "audience", "accepted audience; repeat for several; if absent, any audience passes")
	insecure := fs.Bool("allow-insecure-issuer", false, "trust an http issuer on a loopback host, such as the emulator of a running 'stsproxy --local-sts'")
	usage := func(w io.Writer) {
		fmt.Fprintf(w, "Usage: %s\n\nVerifies a token's signature, issuer, times and audience, and prints its claims as JSON.\nThe token is read from stdin when TOKEN is - or absent. Exit 0 if it verifies, 1 if not.\n\nFlags:\n", verifySynopsis)
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	bad := func(msg string) int {
		fmt.Fprintf(stderr, "stsproxy: verify: %s\nRun 'stsproxy verify --help' for usage.\n", msg)
		return 2
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(stdout)
			return 0
		}
		return bad(err.Error())
	}
	if len(issuers) == 0 {
		return bad("missing --issuer: name the issuer whose keys verify the token")
	}
	if fs.NArg() > 1 {
		return bad(fmt.Sprintf("want at most one TOKEN argument, got %d", fs.NArg()))
	}
	cfg := verify.Config{
		Audiences:                    audiences,
		SkipAudienceCheck:            len(audiences) == 0,
		AllowInsecureLoopbackIssuers: *insecure,
		Logger:                       slog.New(slog.NewTextHandler(io.Discard, nil)), // the error is printed below
	}
	for _, iss := range issuers {
		cfg.Issuers = append(cfg.Issuers, verify.Issuer{URL: iss})
	}
	v, err := verify.New(cfg)
	if err != nil {
		msg := strings.TrimPrefix(err.Error(), "verify: ")
		if strings.Contains(msg, "AllowInsecureLoopbackIssuers") {
			msg = fmt.Sprintf("--issuer %q is http: add --allow-insecure-issuer to trust a loopback test issuer", issuersOf(cfg))
		}
		return bad(msg)
	}

	raw := fs.Arg(0)
	if raw == "" || raw == "-" {
		b, err := io.ReadAll(io.LimitReader(stdin, verify.MaxTokenSize+1))
		if err != nil {
			fmt.Fprintf(stderr, "stsproxy: verify: read token from stdin: %v\n", err)
			return 1
		}
		raw = string(b)
	}
	raw = strings.TrimSpace(raw)
	if scheme, tok, ok := strings.Cut(raw, " "); ok && strings.EqualFold(scheme, "Bearer") {
		raw = strings.TrimSpace(tok)
	}

	claims, err := v.Verify(ctx, raw)
	if err != nil {
		fmt.Fprintf(stderr, "stsproxy: verify: %v\n", err)
		return 1
	}
	out, err := json.MarshalIndent(json.RawMessage(claims.Raw), "", "  ")
	if err != nil {
		fmt.Fprintf(stderr, "stsproxy: verify: format claims: %v\n", err)
		return 1
	}
	if _, err := fmt.Fprintf(stdout, "%s\n", out); err != nil {
		fmt.Fprintf(stderr, "stsproxy: verify: write claims: %v\n", err)
		return 1
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

// stringsFlag is a repeatable string flag.
type stringsFlag []string

// String returns the values joined by commas.
func (s *stringsFlag) String() string { return strings.Join(*s, ",") }

// Set appends a value.
func (s *stringsFlag) Set(v string) error {
	*s = append(*s, v)
	return nil
}
