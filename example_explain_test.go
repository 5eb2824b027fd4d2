package stsauth_test

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/stsauth/stsauth"
	"github.com/stsauth/stsauth/ststest"
)

// Say what a failure means and how to fix it: here the account has not
// enabled outbound identity federation. The source's own log line for the
// failed fetch carries the same code and fix.
func ExampleExplain() {
	srv := ststest.NewServer()
	defer srv.Close()
	srv.FailAll("OutboundWebIdentityFederationDisabledException")

	src, err := stsauth.NewTokenSource(srv.Client(func(o *sts.Options) { o.RetryMaxAttempts = 1 }))
	if err != nil {
		panic(err)
	}
	defer src.Close()
	_, err = src.Token(context.Background(), stsauth.MustAudience("https://api.example.com"))
	x := stsauth.Explain(err)
	fmt.Println("code:", x.Code)
	fmt.Println("cause:", x.Cause)
	fmt.Println("fix:", x.Fix)
	fmt.Println("transient:", x.Transient)
	// Output:
	// code: OutboundWebIdentityFederationDisabledException
	// cause: outbound identity federation is not enabled for the AWS account
	// fix: enable it, once per account: aws iam enable-outbound-web-identity-federation; then aws iam get-outbound-web-identity-federation-info shows the issuer to register with the APIs you call
	// transient: false
}

// See why a token lives less than asked for: the caller's credentials
// expire in 20 minutes, so the source asks for tokens that end a minute
// before them rather than the configured hour.
func ExampleToken_shortened() {
	srv := ststest.NewServer()
	defer srv.Close()
	srv.SetSessionExpiry(time.Now().Add(20*time.Minute + 30*time.Second))

	src, err := stsauth.NewTokenSource(srv.Client(), stsauth.WithDuration(time.Hour))
	if err != nil {
		panic(err)
	}
	defer src.Close()
	tok, err := src.Token(context.Background(), stsauth.MustAudience("https://api.example.com"))
	if err != nil {
		panic(err)
	}
	fmt.Println(tok.Shortened)
	fmt.Println("under 20 minutes:", tok.Lifetime < 20*time.Minute)
	// Output:
	// shortened to session
	// under 20 minutes: true
}
