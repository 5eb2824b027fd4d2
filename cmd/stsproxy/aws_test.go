package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stsauth/stsauth"
	"github.com/stsauth/stsauth/ststest"
)

// isolateAWS applies fake's environment (see ststest.IMDS.Env) to the test
// process, for the SDK reads it, with STS at stsURL. It returns the shared
// config file. Tests that call it cannot run in parallel.
func isolateAWS(t *testing.T, fake *ststest.IMDS, stsURL string) string {
	dir := t.TempDir()
	for k, v := range fake.Env(dir) {
		t.Setenv(k, v)
	}
	t.Setenv("AWS_ENDPOINT_URL_STS", stsURL)
	cfgFile := filepath.Join(dir, "config")
	require.NoError(t, os.WriteFile(cfgFile, nil, 0o600))
	return cfgFile
}

// closedLoopbackURL returns an http URL on loopback where nothing listens.
func closedLoopbackURL(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return "http://" + addr
}

// TestDoctorRegionSource runs the doctor with its real dependencies, the
// SDK pointed at the emulator and a fake IMDS, and checks that it names
// where the region came from.
func TestDoctorRegionSource(t *testing.T) {
	srv := ststest.NewServer()
	t.Cleanup(srv.Close)
	fake := ststest.NewIMDS("eu-west-3")
	t.Cleanup(fake.Close)
	tests := []struct {
		name  string
		args  []string
		env   map[string]string
		conf  string
		want  string
		calls bool // IMDS asked
	}{
		{name: "flag", args: []string{"--region", "ap-south-1"}, env: map[string]string{"AWS_REGION": "us-east-1"}, want: "ap-south-1 (from --region)"},
		{name: "AWS_REGION", env: map[string]string{"AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-west-2"}, want: "us-east-1 (from AWS_REGION)"},
		{name: "AWS_DEFAULT_REGION", env: map[string]string{"AWS_DEFAULT_REGION": "us-west-2"}, want: "us-west-2 (from AWS_DEFAULT_REGION)"},
		{name: "shared config", conf: "[profile dev]\nregion = eu-central-1\n", env: map[string]string{"AWS_PROFILE": "dev"},
			want: "eu-central-1 (from the shared config, profile dev)"},
		{name: "instance metadata", want: "eu-west-3 (from the EC2 instance metadata service)", calls: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfgFile := isolateAWS(t, fake, srv.URL)
			if tc.conf != "" {
				require.NoError(t, os.WriteFile(cfgFile, []byte(tc.conf), 0o600))
			}
			if !tc.calls {
				t.Setenv("AWS_ACCESS_KEY_ID", "AKIDSTSTEST")
				t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
			}
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			before := fake.Calls()
			var stdout, stderr bytes.Buffer
			args := append([]string{"doctor", "--token-audience", "https://api.example.com"}, tc.args...)
			code := run(context.Background(), args, os.Getenv, &stdout, &stderr)
			assert.Contains(t, stdout.String(), "PASS  region: "+tc.want)
			// The emulator takes any signed request.
			assert.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
			if tc.calls {
				assert.Contains(t, stdout.String(), "PASS  credentials: from EC2RoleProvider", "the instance role's, from the fake")
			} else {
				assert.Contains(t, stdout.String(), "PASS  credentials: from EnvConfigCredentials")
				assert.Equal(t, before, fake.Calls(), "with a region and credentials configured, IMDS is not asked")
			}
		})
	}
}

// TestWithoutAWSFailsFast checks that with no AWS setup at all, and an
// instance metadata service that never answers, token and doctor end in
// about a second with what was tried and what to do, --local-sts included.
func TestWithoutAWSFailsFast(t *testing.T) {
	fake := ststest.NewIMDS("")
	t.Cleanup(fake.Close)
	fake.SetHang(true)
	// About a second; the slack is for a loaded machine. The SDK's own
	// retries took 15 s (token); the doctor's gain (5 s to 1 s) is proved
	// without a clock by TestLoadAWSConfigWithoutRegion, which counts the
	// questions to IMDS.
	const bound = stsauth.IMDSTimeout + 9*time.Second
	tests := []struct {
		name   string
		args   []string
		region string
		want   []string
	}{
		{name: "token with a region", args: []string{"token", "--token-audience", "https://api.example.com"}, region: "us-east-1",
			want: []string{"stsproxy: token: the AWS SDK got no credentials from environment variables", "EC2 instance metadata, which did not answer",
				"AWS_PROFILE", "or add --local-sts to try stsproxy without AWS"}},
		{name: "token without a region", args: []string{"token", "--token-audience", "https://api.example.com"},
			want: []string{"stsproxy: token: no AWS Region: tried --region, AWS_REGION", "which did not answer within 1s",
				"set --region or AWS_REGION", "or add --local-sts to try stsproxy without AWS"}},
		{name: "doctor", args: []string{"doctor", "--token-audience", "https://api.example.com"},
			want: []string{"FAIL  region: no AWS Region", "FAIL  credentials: the AWS SDK got no credentials", "--local-sts"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			isolateAWS(t, fake, closedLoopbackURL(t))
			t.Setenv("AWS_REGION", tc.region)
			var stdout, stderr bytes.Buffer
			start := time.Now()
			code := run(context.Background(), tc.args, os.Getenv, &stdout, &stderr)
			elapsed := time.Since(start)
			assert.Equal(t, 1, code)
			out := stdout.String() + stderr.String()
			for _, w := range tc.want {
				assert.Contains(t, out, w)
			}
			assert.Less(t, elapsed, bound)
			if tc.args[0] == "token" {
				assert.Empty(t, stdout.String())
				assert.Equal(t, 1, strings.Count(stderr.String(), "\n"), "one line:\n%s", stderr.String())
			}
		})
	}
}
