package ststest_test

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"

	"github.com/stsauth/stsauth/ststest"
)

func ExampleServer() {
	srv := ststest.NewServer()
	defer srv.Close()

	out, err := srv.Client().GetWebIdentityToken(context.Background(), &sts.GetWebIdentityTokenInput{
		Audience:         []string{"https://api.example.com"},
		SigningAlgorithm: aws.String("RS256"),
		DurationSeconds:  aws.Int32(900),
	})
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	fmt.Println("token parts:", len(strings.Split(aws.ToString(out.WebIdentityToken), ".")))
	fmt.Println("STS calls:", srv.Calls())
	fmt.Println("calls for the audience:", srv.CallsFor("https://api.example.com"))
	// Output:
	// token parts: 3
	// STS calls: 1
	// calls for the audience: 1
}

func ExampleServer_FailNext() {
	srv := ststest.NewServer()
	defer srv.Close()
	srv.FailNext(1, "AccessDenied")

	client := srv.Client(func(o *sts.Options) { o.RetryMaxAttempts = 1 })
	in := &sts.GetWebIdentityTokenInput{
		Audience:         []string{"https://api.example.com"},
		SigningAlgorithm: aws.String("ES384"),
	}
	_, err := client.GetWebIdentityToken(context.Background(), in)
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		fmt.Println("first call:", apiErr.ErrorCode())
	}
	_, err = client.GetWebIdentityToken(context.Background(), in)
	fmt.Println("second call succeeded:", err == nil)
	fmt.Println("STS calls:", srv.Calls())
	// Output:
	// first call: AccessDenied
	// second call succeeded: true
	// STS calls: 2
}
