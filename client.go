package stsauth

import (
	"context"
	"errors"
	"net/http"

	"github.com/aws/aws-sdk-go-v2/service/sts"
)

// ErrNoRegion is wrapped by the error of [LoadAWSConfig] and [NewClient]
// when no source names a region: GetWebIdentityToken is served only by
// regional STS endpoints.
var ErrNoRegion = errors.New("stsauth: no AWS region configured (set AWS_REGION or a profile region): GetWebIdentityToken is not served by the global STS endpoint")

// NewClient returns an [http.Client] that puts a web identity token for
// audiences on every request, the way idtoken.NewClient does for Google
// identity tokens. With no audiences, each request's audience is its origin
// ([HostAudience]).
//
// It loads the AWS configuration with [LoadAWSConfig]: environment
// variables, shared config files, and container or instance roles, and the
// EC2 instance's Region when none is configured; the STS endpoint can be
// overridden with AWS_ENDPOINT_URL_STS. It makes no STS call:
// the first request fetches the first token. It fails if the audiences are
// invalid, an option is, or no region is configured.
//
// The client's Transport is a *[Transport]; once its [TokenSource] holds a
// token it runs a refresh goroutine, which
// client.Transport.(*stsauth.Transport).Source.Close() stops.
func NewClient(ctx context.Context, audiences []string, opts ...Option) (*http.Client, error) {
	var resolver AudienceResolver = HostAudience{}
	if len(audiences) > 0 {
		aud, err := NewAudience(audiences...)
		if err != nil {
			return nil, err
		}
		resolver = FixedAudience(aud)
	}
	cfg, _, err := LoadAWSConfig(ctx)
	if err != nil {
		return nil, err
	}
	src, err := NewTokenSource(sts.NewFromConfig(cfg), opts...)
	if err != nil {
		return nil, err
	}
	return &http.Client{Transport: &Transport{Source: src, Audience: resolver}}, nil
}
