package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/smithy-go"

	"github.com/stsauth/stsauth"
)

// The AWS configuration of the proxy, "stsproxy token" and "stsproxy
// doctor", loaded once here so all three find the same Region and
// credentials.

// credentialProbeTimeout bounds the credential check of "stsproxy token" and
// "stsproxy doctor". Instance metadata is bounded far tighter (1 s, by
// stsauth.LoadAWSConfig); this is for the sources that make network calls of
// their own (IAM Identity Center, web identity).
const credentialProbeTimeout = 10 * time.Second

// withoutAWS ends every message about a missing Region or credentials.
const withoutAWS = "or add --local-sts to try stsproxy without AWS"

// loadAWS loads the AWS configuration with --region, if set, and reports
// where the Region came from (see regionSourceText).
func loadAWS(ctx context.Context, cfg *config) (aws.Config, stsauth.RegionSource, error) {
	var opts []func(*awsconfig.LoadOptions) error
	if cfg.region != "" {
		opts = append(opts, awsconfig.WithRegion(cfg.region))
	}
	return stsauth.LoadAWSConfig(ctx, opts...)
}

// regionSourceText names a Region's source for people, with the flag or
// variable that set it.
func regionSourceText(src stsauth.RegionSource, getenv func(string) string) string {
	switch src {
	case stsauth.RegionFromOptions:
		return "--region"
	case stsauth.RegionFromEnvironment:
		if getenv("AWS_REGION") != "" {
			return "AWS_REGION"
		}
		return "AWS_DEFAULT_REGION"
	case stsauth.RegionFromSharedConfig:
		if p := getenv("AWS_PROFILE"); p != "" {
			return "the shared config, profile " + p
		}
		return "the shared config"
	case stsauth.RegionFromIMDS:
		return "the EC2 instance metadata service"
	}
	return string(src)
}

// noRegion says what was tried for a Region and what to do; err is
// LoadAWSConfig's.
func noRegion(err error) (what, fix string) {
	what = "no AWS Region: tried --region, AWS_REGION, AWS_DEFAULT_REGION, the shared config and the EC2 instance metadata service"
	if _, after, ok := strings.Cut(err.Error(), "the EC2 instance metadata service "); ok {
		what += ", which " + after
	}
	return what, "set --region or AWS_REGION (for example us-east-1), " + withoutAWS
}

// noRegionMessage is noRegion in one line.
func noRegionMessage(err error) string {
	what, fix := noRegion(err)
	return what + ": " + fix
}

// probeCredentials retrieves the credentials p finds, waiting at most
// credentialProbeTimeout. Its error wraps stsauth.ErrNoCredentials, so
// stsauth.Explain says what was tried and what to do.
func probeCredentials(ctx context.Context, p aws.CredentialsProvider) (aws.Credentials, error) {
	if p == nil {
		return aws.Credentials{}, fmt.Errorf("%w: no credentials provider", stsauth.ErrNoCredentials)
	}
	ctx, cancel := context.WithTimeout(ctx, credentialProbeTimeout)
	defer cancel()
	creds, err := p.Retrieve(ctx)
	if err != nil {
		return aws.Credentials{}, fmt.Errorf("%w: %w", stsauth.ErrNoCredentials, err)
	}
	return creds, nil
}

// explainLine says in one line what a failure means and what to do, from
// stsauth.Explain, with the --local-sts hint where AWS itself is missing.
func explainLine(err error) string {
	if errors.Is(err, stsauth.ErrNoRegion) {
		return noRegionMessage(err)
	}
	x := stsauth.Explain(err)
	line := x.Cause + ": " + x.Fix
	if api, ok := errors.AsType[smithy.APIError](err); ok {
		line = "STS answered " + api.ErrorCode() + ": " + line
	}
	if x.Code == stsauth.CodeNoCredentials {
		line += ", " + withoutAWS
	}
	return line
}
