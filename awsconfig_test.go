package stsauth

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stsauth/stsauth/ststest"
)

// isolateAWS applies fake's environment (see ststest.IMDS.Env) to the test
// process, for the SDK reads it. It returns the shared config file.
func isolateAWS(t *testing.T, fake *ststest.IMDS) string {
	dir := t.TempDir()
	for k, v := range fake.Env(dir) {
		t.Setenv(k, v)
	}
	cfgFile := filepath.Join(dir, "config")
	require.NoError(t, os.WriteFile(cfgFile, nil, 0o600))
	return cfgFile
}

func TestLoadAWSConfigRegionSource(t *testing.T) {
	fake := ststest.NewIMDS("eu-west-3")
	t.Cleanup(fake.Close)

	t.Run("option", func(t *testing.T) {
		isolateAWS(t, fake)
		t.Setenv("AWS_REGION", "us-east-1")
		cfg, src, err := LoadAWSConfig(context.Background(), awsconfig.WithRegion("ap-south-1"))
		require.NoError(t, err)
		assert.Equal(t, "ap-south-1", cfg.Region)
		assert.Equal(t, RegionFromOptions, src)
	})
	t.Run("environment", func(t *testing.T) {
		isolateAWS(t, fake)
		t.Setenv("AWS_DEFAULT_REGION", "us-west-2")
		cfg, src, err := LoadAWSConfig(context.Background())
		require.NoError(t, err)
		assert.Equal(t, "us-west-2", cfg.Region)
		assert.Equal(t, RegionFromEnvironment, src)
	})
	t.Run("shared config", func(t *testing.T) {
		cfgFile := isolateAWS(t, fake)
		require.NoError(t, os.WriteFile(cfgFile, []byte("[default]\nregion = eu-central-1\n"), 0o600))
		cfg, src, err := LoadAWSConfig(context.Background())
		require.NoError(t, err)
		assert.Equal(t, "eu-central-1", cfg.Region)
		assert.Equal(t, RegionFromSharedConfig, src)
	})
	before := fake.Calls()
	assert.Zero(t, before, "a configured region asks IMDS nothing")
	t.Run("instance metadata", func(t *testing.T) {
		isolateAWS(t, fake)
		// The fake answers in milliseconds, but a loaded machine has taken
		// longer than IMDSTimeout to schedule it: wait as long as it takes.
		// The bound itself is checked by TestLoadAWSConfigWithoutRegion.
		cfg, src, err := loadAWSConfig(context.Background(), time.Minute)
		require.NoError(t, err)
		assert.Equal(t, "eu-west-3", cfg.Region)
		assert.Equal(t, RegionFromIMDS, src)
		assert.NotZero(t, fake.Calls())

		// The instance role's credentials come from the same fake.
		creds, err := cfg.Credentials.Retrieve(context.Background())
		require.NoError(t, err)
		assert.Equal(t, "ASIASTSTESTIMDS00000", creds.AccessKeyID)
	})
}

func TestLoadAWSConfigWithoutRegion(t *testing.T) {
	t.Run("IMDS disabled", func(t *testing.T) {
		fake := ststest.NewIMDS("eu-west-3")
		t.Cleanup(fake.Close)
		isolateAWS(t, fake)
		t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
		_, _, err := LoadAWSConfig(context.Background())
		require.ErrorIs(t, err, ErrNoRegion)
		assert.Contains(t, err.Error(), "AWS_EC2_METADATA_DISABLED")
		assert.Zero(t, fake.Calls())
	})
	t.Run("nothing listens", func(t *testing.T) {
		fake := ststest.NewIMDS("eu-west-3")
		fake.Close() // its port now refuses connections
		isolateAWS(t, fake)
		_, _, err := LoadAWSConfig(context.Background())
		require.ErrorIs(t, err, ErrNoRegion)
		assert.Equal(t, CodeNoRegion, Explain(err).Code)
	})
	t.Run("IMDS does not answer", func(t *testing.T) {
		fake := ststest.NewIMDS("eu-west-3")
		t.Cleanup(fake.Close)
		fake.SetHang(true)
		isolateAWS(t, fake)
		start := time.Now()
		cfg, _, err := LoadAWSConfig(context.Background())
		require.ErrorIs(t, err, ErrNoRegion)
		assert.Contains(t, err.Error(), "did not answer within 1s (not on EC2?)")
		// Bounded by IMDSTimeout; the slack is for a loaded machine.
		assert.Less(t, time.Since(start), IMDSTimeout+4*time.Second)

		// The configuration still checks its credentials, without waiting
		// for the same silence again.
		calls := fake.Calls()
		_, err = cfg.Credentials.Retrieve(context.Background())
		require.Error(t, err)
		assert.Contains(t, err.Error(), "did not answer within 1s")
		assert.Equal(t, calls, fake.Calls(), "IMDS asked again")
	})
}

// TestInstanceCredentialsFailFast checks that with no credentials anywhere
// and an IMDS that never answers, the first Retrieve fails after about
// IMDSTimeout, not after the SDK's retries, and that the token source then
// fails with ErrNoCredentials without calling STS.
func TestInstanceCredentialsFailFast(t *testing.T) {
	fake := ststest.NewIMDS("")
	t.Cleanup(fake.Close)
	fake.SetHang(true)
	isolateAWS(t, fake)
	t.Setenv("AWS_REGION", "us-east-1")
	cfg, _, err := LoadAWSConfig(context.Background())
	require.NoError(t, err)

	start := time.Now()
	_, err = cfg.Credentials.Retrieve(context.Background())
	require.Error(t, err)
	elapsed := time.Since(start)
	assert.GreaterOrEqual(t, elapsed, IMDSTimeout/2, "it did ask IMDS")
	assert.Less(t, elapsed, IMDSTimeout+4*time.Second, "bounded by IMDSTimeout, not the SDK's retries")
	assert.Contains(t, Explain(fmt.Errorf("%w: %w", ErrNoCredentials, err)).Cause, "which did not answer")

	fake.SetHang(false)
	fake.SetRole("")
	srv := ststest.NewServer()
	t.Cleanup(srv.Close)
	cfg.BaseEndpoint = &srv.URL
	ts, err := NewTokenSource(sts.NewFromConfig(cfg))
	require.NoError(t, err)
	t.Cleanup(func() { ts.Close() })
	_, err = ts.Token(context.Background(), apiAudience)
	require.ErrorIs(t, err, ErrNoCredentials)
	x := Explain(err)
	assert.Equal(t, CodeNoCredentials, x.Code)
	assert.Contains(t, x.Cause, "EC2 instance metadata")
	assert.NotContains(t, x.Cause, "did not answer", "IMDS answered: no role")
	assert.Zero(t, srv.Calls())
}
