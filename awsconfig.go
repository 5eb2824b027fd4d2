package stsauth

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/ec2rolecreds"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
)

// IMDSTimeout bounds each question [LoadAWSConfig]'s configuration asks the
// EC2 instance metadata service (IMDS): the instance's Region, its role and
// the role's credentials, retries included. IMDS answers on EC2 in
// milliseconds; off EC2 nothing answers, and a second is all it costs.
const IMDSTimeout = time.Second

// A RegionSource says where the AWS Region of a configuration came from.
type RegionSource string

// The places [LoadAWSConfig] finds a Region, in the order it looks.
const (
	// RegionFromOptions: a load option, such as config.WithRegion
	// (stsproxy's --region flag).
	RegionFromOptions RegionSource = "options"
	// RegionFromEnvironment: AWS_REGION or AWS_DEFAULT_REGION.
	RegionFromEnvironment RegionSource = "environment"
	// RegionFromSharedConfig: the profile's region in the shared config
	// file (~/.aws/config, AWS_PROFILE).
	RegionFromSharedConfig RegionSource = "shared config"
	// RegionFromIMDS: the EC2 instance's Region, from the instance
	// metadata service.
	RegionFromIMDS RegionSource = "instance metadata"
)

// LoadAWSConfig loads the AWS configuration for an STS client as
// config.LoadDefaultConfig does with optFns, with two differences that
// matter for GetWebIdentityToken, which only regional endpoints serve, and
// off AWS:
//
//   - When no option, environment variable or shared config names a Region,
//     it asks the instance metadata service for the EC2 instance's Region,
//     waiting at most [IMDSTimeout]; AWS_EC2_METADATA_DISABLED=true turns
//     that off, and AWS_EC2_METADATA_SERVICE_ENDPOINT moves it. It reports
//     where the Region came from.
//   - The EC2 instance-role credentials provider waits at most
//     [IMDSTimeout] for each question to IMDS, so that with no credentials
//     anywhere the first Retrieve fails in about a second rather than
//     after the SDK's retries (5 s, and 15 s inside an STS call). A
//     config.WithEC2RoleCredentialOptions in optFns replaces this.
//
// It makes no network call but that Region question. It fails, wrapping
// [ErrNoRegion], when no source names a Region; the configuration it then
// returns is loaded but for the Region, so its credentials can still be
// checked.
func LoadAWSConfig(ctx context.Context, optFns ...func(*awsconfig.LoadOptions) error) (aws.Config, RegionSource, error) {
	return loadAWSConfig(ctx, IMDSTimeout, optFns...)
}

// loadAWSConfig is LoadAWSConfig with bound in place of IMDSTimeout, so
// that in-package tests of a fake IMDS that answers can wait longer than a
// loaded machine may take to answer.
func loadAWSConfig(ctx context.Context, bound time.Duration, optFns ...func(*awsconfig.LoadOptions) error) (aws.Config, RegionSource, error) {
	role := &boundedIMDS{bound: bound}
	opts := append([]func(*awsconfig.LoadOptions) error{
		awsconfig.WithEC2RoleCredentialOptions(func(o *ec2rolecreds.Options) { o.Client = role }),
	}, optFns...)
	cfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return aws.Config{}, "", fmt.Errorf("stsauth: load AWS config: %w", err)
	}
	client := imds.NewFromConfig(cfg)
	role.client.Store(client)
	if cfg.Region != "" {
		return cfg, regionSource(cfg), nil
	}
	region, err := instanceRegion(ctx, client, bound)
	if errors.Is(err, imdsSilence{bound}) {
		// The configuration is returned for diagnostics only: do not wait
		// for the same silence again when its credentials are checked.
		role.unanswered.Store(true)
	}
	if err != nil {
		return cfg, "", fmt.Errorf("%w; the EC2 instance metadata service %s", ErrNoRegion, err)
	}
	cfg.Region = region
	return cfg, RegionFromIMDS, nil
}

// regionSource returns the first of cfg's sources that names its Region:
// the order config.LoadDefaultConfig resolves it in.
func regionSource(cfg aws.Config) RegionSource {
	for _, src := range cfg.ConfigSources {
		switch s := src.(type) {
		case awsconfig.LoadOptions:
			if s.Region != "" {
				return RegionFromOptions
			}
		case awsconfig.EnvConfig:
			if s.Region != "" {
				return RegionFromEnvironment
			}
		case awsconfig.SharedConfig:
			if s.Region != "" {
				return RegionFromSharedConfig
			}
		}
	}
	return RegionFromOptions // set on the aws.Config by other means
}

// instanceRegion asks IMDS for the instance's Region, waiting at most
// bound. Its error says, in a few words, why there is none.
func instanceRegion(ctx context.Context, client *imds.Client, bound time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	out, err := client.GetRegion(ctx, &imds.GetRegionInput{})
	switch {
	case err == nil && out.Region != "":
		return out.Region, nil
	case err == nil:
		return "", errors.New("answered no Region")
	case ctx.Err() != nil || isTimeout(err):
		return "", imdsSilence{bound}
	}
	return "", fmt.Errorf("did not say: %w", err)
}

// imdsSilence is the error of an IMDS question that got no answer within
// bound (IMDSTimeout). It wraps context.DeadlineExceeded.
type imdsSilence struct{ bound time.Duration }

func (e imdsSilence) Error() string {
	return "did not answer within " + e.bound.String() + " (not on EC2?)"
}
func (imdsSilence) Unwrap() error { return context.DeadlineExceeded }

// boundedIMDS is the IMDS client of the EC2 role credentials provider: the
// SDK's, built from the loaded configuration, with each question bounded by
// bound (IMDSTimeout).
type boundedIMDS struct {
	bound      time.Duration
	client     atomic.Pointer[imds.Client] // set once the configuration is loaded
	unanswered atomic.Bool                 // the Region question got no answer
}

// GetMetadata asks IMDS, waiting at most b.bound.
func (b *boundedIMDS) GetMetadata(ctx context.Context, in *imds.GetMetadataInput, optFns ...func(*imds.Options)) (*imds.GetMetadataOutput, error) {
	c := b.client.Load()
	if c == nil {
		return nil, errors.New("stsauth: instance metadata asked before the AWS configuration was loaded")
	}
	if b.unanswered.Load() {
		return nil, fmt.Errorf("the EC2 instance metadata service %w", imdsSilence{b.bound})
	}
	ctx, cancel := context.WithTimeout(ctx, b.bound)
	defer cancel()
	return c.GetMetadata(ctx, in, optFns...)
}
