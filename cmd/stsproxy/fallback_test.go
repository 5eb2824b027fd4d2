package main

import (
	"context"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stsauth/stsauth"
	"github.com/stsauth/stsauth/ststest"
)

func TestFallbackRegionsConfig(t *testing.T) {
	t.Parallel()
	valid := []struct {
		name string
		args []string
		env  map[string]string
		want []fallbackRegion
	}{
		{"flag", []string{"--sts-fallback-regions", "us-west-2,eu-west-1"}, nil,
			[]fallbackRegion{{region: "us-west-2"}, {region: "eu-west-1"}}},
		{"env", nil, map[string]string{"STS_FALLBACK_REGIONS": "ap-southeast-2"},
			[]fallbackRegion{{region: "ap-southeast-2"}}},
		{"flag beats env", []string{"--sts-fallback-regions", "eu-west-1"}, map[string]string{"STS_FALLBACK_REGIONS": "us-west-2"},
			[]fallbackRegion{{region: "eu-west-1"}}},
		{"repeated, with an endpoint", []string{"--sts-fallback-regions", "us-west-2", "--sts-fallback-regions", "eu-west-1=https://127.0.0.1:8443"}, nil,
			[]fallbackRegion{{region: "us-west-2"}, {region: "eu-west-1", endpoint: "https://127.0.0.1:8443"}}},
		{"loopback http endpoint", []string{"--sts-fallback-regions", "us-west-2=http://localhost:4566"}, nil,
			[]fallbackRegion{{region: "us-west-2", endpoint: "http://localhost:4566"}}},
		{"other than --region", []string{"--region", "us-east-1", "--sts-fallback-regions", "us-west-2"}, nil,
			[]fallbackRegion{{region: "us-west-2"}}},
		{"none", nil, nil, nil},
	}
	for _, tc := range valid {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := parseConfig(tc.args, envOf(tc.env))
			require.NoError(t, err)
			assert.Equal(t, tc.want, c.fallbackRegions)
		})
	}

	invalidCases := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"upper case", []string{"--sts-fallback-regions", "US-WEST-2"}, nil,
			`invalid --sts-fallback-regions/STS_FALLBACK_REGIONS "US-WEST-2": want an AWS Region such as us-west-2`},
		{"empty item", nil, map[string]string{"STS_FALLBACK_REGIONS": "us-west-2,,eu-west-1"},
			`invalid --sts-fallback-regions/STS_FALLBACK_REGIONS "": want an AWS Region such as us-west-2`},
		{"space", nil, map[string]string{"STS_FALLBACK_REGIONS": "us-west-2, eu-west-1"},
			`invalid --sts-fallback-regions/STS_FALLBACK_REGIONS " eu-west-1": want an AWS Region`},
		{"duplicate", []string{"--sts-fallback-regions", "us-west-2,eu-west-1,us-west-2"}, nil,
			`invalid --sts-fallback-regions/STS_FALLBACK_REGIONS "us-west-2,eu-west-1,us-west-2": want distinct Regions: us-west-2 is given twice`},
		{"the primary", []string{"--region", "us-west-2", "--sts-fallback-regions", "eu-west-1,us-west-2"}, nil,
			`invalid --sts-fallback-regions/STS_FALLBACK_REGIONS "us-west-2": want Regions other than the primary, --region us-west-2`},
		{"plain http", []string{"--sts-fallback-regions", "us-west-2=http://10.0.0.1"}, nil,
			`invalid --sts-fallback-regions/STS_FALLBACK_REGIONS "us-west-2=http://10.0.0.1": want REGION=URL with an https URL of an STS endpoint (http only on a loopback host): want https, or http to a loopback host`},
		{"empty endpoint", []string{"--sts-fallback-regions", "us-west-2="}, nil,
			`invalid --sts-fallback-regions/STS_FALLBACK_REGIONS "us-west-2=": want REGION=URL`},
		{"endpoint with a query", []string{"--sts-fallback-regions", "us-west-2=https://127.0.0.1/?a=b"}, nil,
			`want scheme://host[:port][/path]`},
	}
	for _, tc := range invalidCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := parseConfig(tc.args, envOf(tc.env))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			var ue *usageError
			assert.ErrorAs(t, err, &ue)
		})
	}
}

func TestTokenCommandTakesFallbackRegions(t *testing.T) {
	t.Parallel()
	c, err := parseCommandConfig(tokenCommand, []string{"--token-audience", "https://a.example", "--sts-fallback-regions", "us-west-2"}, envOf(nil))
	require.NoError(t, err)
	assert.Equal(t, []fallbackRegion{{region: "us-west-2"}}, c.fallbackRegions)
}

// Fallback clients share the primary's configuration (credentials) but not
// its endpoint override, which names the primary's endpoint; an entry's own
// URL is its endpoint. The primary's Region, known once the AWS
// configuration is loaded, is a configuration error.
func TestFallbackClients(t *testing.T) {
	t.Parallel()
	creds := aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		return aws.Credentials{AccessKeyID: "AKIDFALLBACK", SecretAccessKey: "secret"}, nil
	})
	awsCfg := aws.Config{Region: "us-east-1", BaseEndpoint: aws.String("http://127.0.0.1:1"), Credentials: creds}
	cfg := &config{fallbackRegions: []fallbackRegion{{region: "us-west-2"}, {region: "eu-west-1", endpoint: "https://127.0.0.1:8443"}}}
	clients, err := fallbackClients(cfg, awsCfg, stsauth.RegionFromEnvironment)
	require.NoError(t, err)
	require.Len(t, clients, 2)
	west, eu := clients[0].(*sts.Client).Options(), clients[1].(*sts.Client).Options()
	assert.Equal(t, "us-west-2", west.Region)
	assert.Nil(t, west.BaseEndpoint, "the primary's endpoint override is not inherited")
	assert.Equal(t, "eu-west-1", eu.Region)
	assert.Equal(t, "https://127.0.0.1:8443", aws.ToString(eu.BaseEndpoint))
	got, err := west.Credentials.Retrieve(context.Background())
	require.NoError(t, err)
	assert.Equal(t, "AKIDFALLBACK", got.AccessKeyID, "the same credentials")

	cfg.fallbackRegions = []fallbackRegion{{region: "us-west-2"}, {region: "us-east-1"}}
	_, err = fallbackClients(cfg, awsCfg, stsauth.RegionFromEnvironment)
	var ue *usageError
	require.ErrorAs(t, err, &ue)
	assert.Equal(t, `invalid --sts-fallback-regions/STS_FALLBACK_REGIONS "us-east-1": want Regions other than the primary, us-east-1 (from environment)`, ue.msg)
}

// sourceRegion returns the source_region claim of a JWT, whose signature
// verifyJWT checks.
func sourceRegion(t *testing.T, token string) string {
	t.Helper()
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.RS256, jose.ES384})
	require.NoError(t, err)
	var claims struct {
		AWS struct {
			SourceRegion string `json:"source_region"`
		} `json:"https://sts.amazonaws.com/"`
	}
	require.NoError(t, tok.UnsafeClaimsWithoutVerification(&claims))
	return claims.AWS.SourceRegion
}

// Through the binary: with STS in the primary Region failing or hanging,
// requests get a token from the fallback Region's endpoint, within
// --token-fetch-timeout, and the metrics and log say so.
func TestE2EFallbackRegion(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		down       func(*ststest.Server) (release func())
		errorClass string
	}{
		{"InternalFailure", func(s *ststest.Server) func() { s.FailAll("InternalFailure"); return func() {} }, "InternalFailure"},
		{"hanging", (*ststest.Server).Hold, "transport"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			primary := newSTS(t)
			fallback := ststest.NewUnstartedServer()
			fallback.Region = "us-west-2"
			fallback.Start()
			t.Cleanup(fallback.Close)
			t.Cleanup(tc.down(primary))
			up := newRecordingUpstream(t, nil)
			// One attempt per call: the SDK's own retries of a 500 would
			// only make the test slower.
			env := append(awsEnv(t, primary), "AWS_MAX_ATTEMPTS=1")
			p := startProxyEnv(t, env, "--upstream-host", up.host(), "--token-fetch-timeout", "6s",
				"--sts-fallback-regions", "us-west-2="+fallback.URL)
			p.waitLog(t, `"msg":"STS fallback regions","primary":"us-east-1","fallback_regions":"us-west-2"`)

			c := testClient(t)
			status, body := get(t, c, "http://"+p.addr+"/x", nil)
			require.Equal(t, http.StatusOK, status, "%s; logs:\n%s", body, p.logs.String())
			req, _ := up.lastRequest()
			token := strings.TrimPrefix(req.Header.Get("Authorization"), "Bearer ")
			verifyJWT(t, fallback, token)
			assert.Equal(t, "us-west-2", sourceRegion(t, token))
			assert.Equal(t, 1, fallback.Calls())

			status, body = get(t, c, "http://"+p.metricsAddr+"/metrics", nil)
			require.Equal(t, http.StatusOK, status)
			got := map[string]string{}
			for _, s := range parseExposition(t, body) {
				if s.name == "token_fetch_count_total" || s.name == "token_fetch_fallback_count_total" {
					got[s.name+"{"+labelString(s.labels)+"}"] = s.value
				}
			}
			assert.Equal(t, map[string]string{
				`token_fetch_count_total{audience="http://127.0.0.1",region="us-west-2",result="ok"}`:      "1",
				`token_fetch_fallback_count_total{error_class="` + tc.errorClass + `",region="us-east-1"}`: "1",
			}, got)
			p.waitLog(t, `"region":"us-east-1","next_region":"us-west-2"`)
			assert.NotContains(t, p.logs.String(), token)
		})
	}
}

// A fallback Region equal to the primary, known only once the AWS
// configuration is loaded (here from AWS_REGION), is a configuration error:
// exit 2, naming the flag.
func TestE2EFallbackRegionIsThePrimary(t *testing.T) {
	t.Parallel()
	p := startBinary(t, awsEnv(t, newSTS(t)), "--listen-addr", "127.0.0.1:0", "--metrics-listen-addr", "127.0.0.1:0",
		"--sts-fallback-regions", "eu-west-1,us-east-1")
	assert.Equal(t, 2, p.wait(t), "logs:\n%s", p.logs.String())
	assert.Contains(t, p.logs.String(), `invalid --sts-fallback-regions/STS_FALLBACK_REGIONS "us-east-1": want Regions other than the primary, us-east-1 (from environment)`)
}

// With --local-sts the fallback Regions reach the same emulator: the
// configuration runs unchanged.
func TestE2ETokenCommandLocalSTSWithFallbackRegions(t *testing.T) {
	t.Parallel()
	p := startBinary(t, []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "TOKEN_AUDIENCE=https://local.example", "STS_FALLBACK_REGIONS=us-west-2,eu-west-1"},
		"token", "--local-sts")
	require.Equal(t, 0, p.wait(t), "logs:\n%s", p.logs.String())
	assert.Len(t, strings.Split(strings.TrimSpace(p.stdout.String()), "."), 3, "not a JWT")
}
