package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/stsauth/stsauth/ststest"
)

// Targets for stsproxy inbound against the floor proxy (issue 17).
const (
	inboundRPSRatio = 0.9 // inbound req/s >= 0.9 x floor
	inboundP99Ratio = 1.2 // inbound p99 <= 1.2 x floor
)

// runServeSTS implements "scenarios serve-sts": it runs the emulator on
// loopback until ctx is done, for benchmarks of stsproxy inbound that need
// an issuer and a token from it. It writes one token for -audience to
// -token-file (mode 0600; a token is never logged) and logs one JSON record
// {"msg":"listening","addr":...,"issuer":...} to stderr.
func runServeSTS(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("scenarios serve-sts", flag.ContinueOnError)
	fs.SetOutput(stderr)
	tokenFile := fs.String("token-file", "", "file to write one token to (required)")
	audience := fs.String("audience", "https://api.example.com", "audience of the token")
	alg := fs.String("alg", "ES384", "signing algorithm of the token: RS256 or ES384")
	if err := fs.Parse(args); err != nil || *tokenFile == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: scenarios serve-sts -token-file PATH [-audience A] [-alg RS256|ES384]")
		return 2
	}
	s := ststest.NewServer()
	defer s.Close()
	out, err := s.Client().GetWebIdentityToken(ctx, &sts.GetWebIdentityTokenInput{
		Audience:         []string{*audience},
		SigningAlgorithm: aws.String(*alg),
		DurationSeconds:  aws.Int32(3600),
	})
	if err != nil {
		fmt.Fprintf(stderr, "scenarios: serve-sts: mint: %v\n", err)
		return 1
	}
	if err := os.WriteFile(*tokenFile, []byte(aws.ToString(out.WebIdentityToken)), 0o600); err != nil {
		fmt.Fprintf(stderr, "scenarios: serve-sts: %v\n", err)
		return 1
	}
	rec, _ := json.Marshal(map[string]string{"msg": "listening", "addr": strings.TrimPrefix(s.URL, "http://"), "issuer": s.Issuer()})
	fmt.Fprintf(stderr, "%s\n", rec)
	<-ctx.Done()
	return 0
}
