package verify_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/stsauth/stsauth"
	"github.com/stsauth/stsauth/ststest"
	"github.com/stsauth/stsauth/verify"
)

// mint asks the emulator for a token for aud, as a caller on AWS would.
func mint(srv *ststest.Server, aud string) string {
	out, err := srv.Client().GetWebIdentityToken(context.Background(), &sts.GetWebIdentityTokenInput{
		Audience:         []string{aud},
		SigningAlgorithm: aws.String("ES384"),
	})
	if err != nil {
		panic(err)
	}
	return aws.ToString(out.WebIdentityToken)
}

// Verify a token from the ststest emulator and read its AWS claims.
func ExampleVerifier_Verify() {
	srv := ststest.NewServer()
	defer srv.Close()

	v, err := verify.New(verify.Config{
		// In production: https://<id>.tokens.sts.global.api.aws, no switch.
		Issuers:                      []verify.Issuer{{URL: srv.URL, Account: srv.AccountID}},
		Audiences:                    []string{"https://api.example.com"},
		AllowInsecureLoopbackIssuers: true,
	})
	if err != nil {
		panic(err)
	}
	if err := v.Prime(context.Background()); err != nil {
		panic(err)
	}

	claims, err := v.Verify(context.Background(), mint(srv, "https://api.example.com"))
	if err != nil {
		panic(err)
	}
	fmt.Println("account:", claims.AWS.Account)
	fmt.Println("principal:", claims.AWS.PrincipalID)
	fmt.Println("org:", claims.AWS.OrgID)
	fmt.Println("OU path:", claims.AWS.OUPath)

	_, err = v.Verify(context.Background(), mint(srv, "https://other.example.com"))
	fmt.Println("token for another API:", errors.Is(err, verify.ErrAudience))
	// Output:
	// account: 123456789012
	// principal: arn:aws:iam::123456789012:role/ststest
	// org: o-ststest000
	// OU path: [o-ststest000/r-st00/ou-st00-ststest0/]
	// token for another API: true
}

// Protect an API with the middleware; the client side is stsauth's
// Transport, so both ends of the exchange come from this project.
func ExampleVerifier_Middleware() {
	srv := ststest.NewServer()
	defer srv.Close()
	v, err := verify.New(verify.Config{
		Issuers:                      []verify.Issuer{{URL: srv.URL}},
		Audiences:                    []string{"https://api.example.com"},
		AllowInsecureLoopbackIssuers: true,
	})
	if err != nil {
		panic(err)
	}
	api := httptest.NewServer(v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		claims, _ := verify.ClaimsFromContext(r.Context())
		fmt.Fprintf(w, "hello %s", claims.Subject)
	})))
	defer api.Close()

	src, err := stsauth.NewTokenSource(srv.Client())
	if err != nil {
		panic(err)
	}
	defer src.Close()
	client := &http.Client{Transport: &stsauth.Transport{
		Source:   src,
		Audience: stsauth.StaticAudience("https://api.example.com"),
	}}
	for _, c := range []*http.Client{client, http.DefaultClient} {
		resp, err := c.Get(api.URL)
		if err != nil {
			panic(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Printf("%d %s\n", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	// Output:
	// 200 hello arn:aws:iam::123456789012:role/ststest
	// 401 {"reason":"no_token","error_description":"no bearer token"}
}

// Allow only callers from one organization and one branch of its OU tree.
func ExamplePolicy() {
	const org = "o-a1b2c3d4e5"
	payments := ststest.NewUnstartedServer()
	payments.OrgID, payments.OUPath = org, []string{org + "/r-ab12/ou-ab12-payments/ou-ab12-prod0001/"}
	payments.Start()
	defer payments.Close()
	sandbox := ststest.NewUnstartedServer()
	sandbox.OrgID, sandbox.OUPath = org, []string{org + "/r-ab12/ou-ab12-sandbox0/"}
	sandbox.Start()
	defer sandbox.Close()

	v, err := verify.New(verify.Config{
		Issuers:   []verify.Issuer{{URL: payments.URL}, {URL: sandbox.URL}},
		Audiences: []string{"https://api.example.com"},
		Policy: verify.Policy{
			OrgIDs:         []string{org},
			OUPathPrefixes: []string{org + "/r-ab12/ou-ab12-payments/"},
		},
		AllowInsecureLoopbackIssuers: true,
	})
	if err != nil {
		panic(err)
	}
	_, err = v.Verify(context.Background(), mint(payments, "https://api.example.com"))
	fmt.Println("payments allowed:", err == nil)
	_, err = v.Verify(context.Background(), mint(sandbox, "https://api.example.com"))
	fmt.Println("sandbox allowed:", err == nil)
	fmt.Println("sandbox refused by policy:", errors.Is(err, verify.ErrPolicy))
	// Output:
	// payments allowed: true
	// sandbox allowed: false
	// sandbox refused by policy: true
}
