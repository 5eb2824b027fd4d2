package stsauth_test

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/stsauth/stsauth"
	"github.com/stsauth/stsauth/ststest"
)

// Ask STS in a second Region when the first fails. In production each
// client is sts.NewFromConfig(cfg, func(o *sts.Options) { o.Region = ... })
// from the same aws.Config; here two emulators stand in for us-east-1 and
// us-west-2, and the first answers every call with ServiceUnavailable.
func ExampleWithFallback() {
	start := func(region string) *ststest.Server {
		s := ststest.NewUnstartedServer()
		s.Region = region
		s.Start()
		return s
	}
	east, west := start("us-east-1"), start("us-west-2")
	defer east.Close()
	defer west.Close()
	east.FailAll("ServiceUnavailable")

	once := func(o *sts.Options) { o.RetryMaxAttempts = 1 } // no SDK retries, for a quick example
	src, err := stsauth.NewTokenSource(east.Client(once), stsauth.WithFallback(west.Client(once)))
	if err != nil {
		panic(err)
	}
	defer src.Close()
	_, err = src.Token(context.Background(), stsauth.MustAudience("https://api.example.com"))
	fmt.Println("error:", err)
	fmt.Println("calls in us-east-1:", east.Calls())
	fmt.Println("calls in us-west-2:", west.Calls())
	// Output:
	// error: <nil>
	// calls in us-east-1: 1
	// calls in us-west-2: 1
}
