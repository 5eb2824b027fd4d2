package ststest

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/aws-sdk-go-v2/service/sts/types"
	"github.com/aws/smithy-go"
	"github.com/go-jose/go-jose/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// fakeClock is a settable clock shared by a test and the server.
type fakeClock struct {
	mu sync.Mutex // guards t
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// newTestServer starts a server after configure (which may be nil) has set
// its fields, and closes it when the test ends.
func newTestServer(t *testing.T, configure func(*Server)) *Server {
	t.Helper()
	s := NewUnstartedServer()
	if configure != nil {
		configure(s)
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

// noBackoff keeps the SDK's standard retryer (3 attempts, same retryable
// codes) but removes its jittered sleeps, so tests stay fast and
// deterministic.
func noBackoff(o *sts.Options) {
	o.Retryer = retry.NewStandard(func(so *retry.StandardOptions) {
		so.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return 0, nil })
	})
}

// noRetry makes a client try each call once.
func noRetry(o *sts.Options) { o.RetryMaxAttempts = 1 }

func input(alg string, aud ...string) *sts.GetWebIdentityTokenInput {
	return &sts.GetWebIdentityTokenInput{Audience: aud, SigningAlgorithm: aws.String(alg)}
}

// fetchKeys reads the discovery document and then the JWKS it points to,
// as a relying party would.
func fetchKeys(t *testing.T, s *Server) jose.JSONWebKeySet {
	t.Helper()
	var disc struct {
		Issuer  string   `json:"issuer"`
		JWKSURI string   `json:"jwks_uri"`
		Algs    []string `json:"id_token_signing_alg_values_supported"`
	}
	getJSON(t, s.URL+"/.well-known/openid-configuration", &disc)
	require.Equal(t, s.Issuer(), disc.Issuer)
	require.Equal(t, s.JWKSURL(), disc.JWKSURI)
	var set jose.JSONWebKeySet
	getJSON(t, disc.JWKSURI, &set)
	return set
}

func getJSON(t *testing.T, u string, v any) {
	t.Helper()
	resp, err := http.Get(u)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	require.NoError(t, json.NewDecoder(resp.Body).Decode(v))
}

// tokenClaims is what the tests read back from a minted token.
type tokenClaims struct {
	Iss string          `json:"iss"`
	Sub string          `json:"sub"`
	Aud json.RawMessage `json:"aud"`
	Iat int64           `json:"iat"`
	Exp int64           `json:"exp"`
	Jti string          `json:"jti"`
	AWS struct {
		AWSAccount   string            `json:"aws_account"`
		SourceRegion string            `json:"source_region"`
		PrincipalID  string            `json:"principal_id"`
		OrgID        string            `json:"org_id"`
		OUPath       json.RawMessage   `json:"ou_path"`
		RequestTags  map[string]string `json:"request_tags"`
		// IdentityStoreUserID is a pointer to tell an absent claim from an
		// empty one.
		IdentityStoreUserID *string `json:"identity_store_user_id"`
	} `json:"https://sts.amazonaws.com/"`
}

// verify checks the token's signature against keys and returns its claims.
func verify(t *testing.T, keys jose.JSONWebKeySet, token, alg string) tokenClaims {
	t.Helper()
	jws, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(alg)})
	require.NoError(t, err, "parse token")
	require.Len(t, jws.Signatures, 1)
	h := jws.Signatures[0].Header
	assert.Equal(t, alg, h.Algorithm)
	assert.Equal(t, "JWT", h.ExtraHeaders["typ"])
	found := keys.Key(h.KeyID)
	require.Len(t, found, 1, "JWKS keys for kid %q", h.KeyID)
	if alg == "ES384" {
		assert.Equal(t, alg, found[0].Algorithm)
	} else {
		assert.Empty(t, found[0].Algorithm, "AWS publishes its RSA key with no alg")
	}
	assert.Equal(t, "sig", found[0].Use)
	payload, err := jws.Verify(found[0].Key)
	require.NoError(t, err, "verify token")
	var c tokenClaims
	require.NoError(t, json.Unmarshal(payload, &c))
	return c
}

func TestGetWebIdentityTokenSuccess(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	s := newTestServer(t, func(s *Server) {
		s.AccountID = "210987654321"
		s.Region = "eu-west-1"
		s.Now = clock.Now
	})
	keys := fetchKeys(t, s)
	tests := []struct {
		alg      string
		duration *int32
		wantLife int64
	}{
		{alg: "RS256", wantLife: 300},
		{alg: "ES384", wantLife: 300},
		{alg: "RS256", duration: aws.Int32(3600), wantLife: 3600},
		{alg: "ES384", duration: aws.Int32(60), wantLife: 60},
	}
	kids := map[string]string{}
	for _, tc := range tests {
		t.Run(tc.alg+"/"+strconv.FormatInt(tc.wantLife, 10), func(t *testing.T) {
			in := input(tc.alg, "https://api.example.com")
			in.DurationSeconds = tc.duration
			out, err := s.Client().GetWebIdentityToken(t.Context(), in)
			require.NoError(t, err)
			c := verify(t, keys, aws.ToString(out.WebIdentityToken), tc.alg)
			assert.Equal(t, s.URL, c.Iss)
			assert.Equal(t, "arn:aws:iam::210987654321:role/ststest", c.Sub)
			assert.JSONEq(t, `"https://api.example.com"`, string(c.Aud))
			assert.Equal(t, clock.Now().Unix(), c.Iat)
			assert.Equal(t, tc.wantLife, c.Exp-c.Iat)
			assert.NotEmpty(t, c.Jti)
			assert.Equal(t, "210987654321", c.AWS.AWSAccount)
			assert.Equal(t, "eu-west-1", c.AWS.SourceRegion)
			assert.Equal(t, "arn:aws:iam::210987654321:role/ststest", c.AWS.PrincipalID, "principal_id is the ARN, as in real tokens")
			assert.Equal(t, DefaultOrgID, c.AWS.OrgID)
			assert.JSONEq(t, `["o-ststest000/r-st00/ou-st00-ststest0/"]`, string(c.AWS.OUPath), "ou_path is an array")
			assert.Nil(t, c.AWS.IdentityStoreUserID)
			assert.Nil(t, c.AWS.RequestTags)
			require.NotNil(t, out.Expiration)
			assert.Equal(t, time.Unix(c.Exp, 0).UTC(), out.Expiration.UTC())

			jws, err := jose.ParseSignedCompact(aws.ToString(out.WebIdentityToken), []jose.SignatureAlgorithm{jose.SignatureAlgorithm(tc.alg)})
			require.NoError(t, err)
			kids[tc.alg] = jws.Signatures[0].Header.KeyID
		})
	}
	assert.NotEqual(t, kids["RS256"], kids["ES384"], "kid values must differ")
}

func TestConfiguredPrincipalClaims(t *testing.T) {
	t.Parallel()
	const principal = "arn:aws:iam::111122223333:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_Dev_0123456789abcdef"
	s := newTestServer(t, func(s *Server) {
		s.AccountID = "111122223333"
		s.OrgID = "o-a1b2c3d4e5"
		s.OUPath = []string{"o-a1b2c3d4e5/r-ab12/ou-ab12-11111111/ou-ab12-22222222/"}
		s.PrincipalARN = principal
		s.IdentityStoreUserID = "90676b1a-0031-70a4-4b1a-1f1c2b3d4e5f"
	})
	keys := fetchKeys(t, s)
	out, err := s.Client().GetWebIdentityToken(t.Context(), input("ES384", "aud"))
	require.NoError(t, err)
	c := verify(t, keys, aws.ToString(out.WebIdentityToken), "ES384")
	assert.Equal(t, principal, c.Sub)
	assert.Equal(t, principal, c.AWS.PrincipalID)
	assert.Equal(t, "111122223333", c.AWS.AWSAccount)
	assert.Equal(t, "o-a1b2c3d4e5", c.AWS.OrgID)
	assert.JSONEq(t, `["o-a1b2c3d4e5/r-ab12/ou-ab12-11111111/ou-ab12-22222222/"]`, string(c.AWS.OUPath))
	require.NotNil(t, c.AWS.IdentityStoreUserID)
	assert.Equal(t, "90676b1a-0031-70a4-4b1a-1f1c2b3d4e5f", *c.AWS.IdentityStoreUserID)
}

func TestEmptyOUPathIsAnEmptyArray(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, func(s *Server) { s.OUPath = []string{} })
	keys := fetchKeys(t, s)
	out, err := s.Client().GetWebIdentityToken(t.Context(), input("RS256", "aud"))
	require.NoError(t, err)
	c := verify(t, keys, aws.ToString(out.WebIdentityToken), "RS256")
	assert.JSONEq(t, `[]`, string(c.AWS.OUPath))
}

func TestMultipleAudiencesAndTags(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, nil)
	keys := fetchKeys(t, s)
	in := input("ES384", "b-aud", "a-aud", "c-aud")
	in.Tags = []types.Tag{
		{Key: aws.String("team"), Value: aws.String("payments")},
		{Key: aws.String("empty"), Value: aws.String("")},
	}
	out, err := s.Client().GetWebIdentityToken(t.Context(), in)
	require.NoError(t, err)
	c := verify(t, keys, aws.ToString(out.WebIdentityToken), "ES384")
	assert.JSONEq(t, `["b-aud","a-aud","c-aud"]`, string(c.Aud), "aud keeps request order")
	assert.Equal(t, map[string]string{"team": "payments", "empty": ""}, c.AWS.RequestTags)
}

func TestUniqueJTI(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, nil)
	keys := fetchKeys(t, s)
	seen := map[string]bool{}
	for range 3 {
		out, err := s.Client().GetWebIdentityToken(t.Context(), input("RS256", "aud"))
		require.NoError(t, err)
		jti := verify(t, keys, aws.ToString(out.WebIdentityToken), "RS256").Jti
		assert.False(t, seen[jti], "jti %q repeated", jti)
		seen[jti] = true
	}
}

func TestDiscoveryAndJWKS(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, nil)
	var disc map[string]any
	getJSON(t, s.URL+"/.well-known/openid-configuration", &disc)
	assert.Equal(t, s.URL, disc["issuer"])
	assert.Equal(t, s.URL+"/.well-known/jwks.json", disc["jwks_uri"])
	assert.Equal(t, []any{"RS256", "ES384"}, disc["id_token_signing_alg_values_supported"])
	assert.Contains(t, disc, "response_types_supported")
	assert.Contains(t, disc, "subject_types_supported")

	var raw struct {
		Keys []map[string]string `json:"keys"`
	}
	getJSON(t, s.JWKSURL(), &raw)
	require.Len(t, raw.Keys, 2)
	rsaKey, ecKey := raw.Keys[0], raw.Keys[1]
	assert.Equal(t, "RSA", rsaKey["kty"])
	assert.Equal(t, "RSA_0", rsaKey["kid"])
	assert.NotContains(t, rsaKey, "alg", "AWS publishes its RSA key with no alg")
	assert.Equal(t, "AQAB", rsaKey["e"])
	assert.NotContains(t, rsaKey["n"], "=")
	assert.Equal(t, "EC", ecKey["kty"])
	assert.Equal(t, "EC384_0", ecKey["kid"])
	assert.Equal(t, "ES384", ecKey["alg"])
	assert.Equal(t, "P-384", ecKey["crv"])
	assert.Len(t, ecKey["x"], 64, "48 bytes, base64url unpadded")
	assert.Len(t, ecKey["y"], 64, "48 bytes, base64url unpadded")
	for _, k := range raw.Keys {
		assert.Equal(t, "sig", k["use"])
		assert.NotEmpty(t, k["kid"])
		assert.NotContains(t, k, "d", "private key material must not be published")
	}
	assert.NotEqual(t, rsaKey["kid"], ecKey["kid"])

	resp, err := http.Post(s.JWKSURL(), "text/plain", nil)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
}

func TestRotate(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, nil)
	kidOf := func(alg string) string {
		t.Helper()
		out, err := s.Client().GetWebIdentityToken(t.Context(), input(alg, "aud"))
		require.NoError(t, err)
		jws, err := jose.ParseSignedCompact(aws.ToString(out.WebIdentityToken), []jose.SignatureAlgorithm{jose.SignatureAlgorithm(alg)})
		require.NoError(t, err)
		return jws.Signatures[0].Header.KeyID
	}
	published := func() []string {
		t.Helper()
		var kids []string
		for _, k := range fetchKeys(t, s).Keys {
			kids = append(kids, k.KeyID)
		}
		return kids
	}
	assert.Equal(t, []string{"RSA_0", "EC384_0"}, published())
	assert.Equal(t, "RSA_0", kidOf("RS256"))

	s.Rotate()
	assert.Equal(t, []string{"RSA_1", "EC384_1", "RSA_0", "EC384_0"}, published(), "new keys first, previous keys kept")
	assert.Equal(t, "RSA_1", kidOf("RS256"))
	assert.Equal(t, "EC384_1", kidOf("ES384"))

	s.Rotate()
	assert.Equal(t, []string{"RSA_2", "EC384_2", "RSA_1", "EC384_1"}, published(), "keys two rotations back are gone")
	// A token signed after the rotation verifies with the published keys.
	keys := fetchKeys(t, s)
	out, err := s.Client().GetWebIdentityToken(t.Context(), input("ES384", "aud"))
	require.NoError(t, err)
	verify(t, keys, aws.ToString(out.WebIdentityToken), "ES384")

	assert.Panics(t, func() { NewUnstartedServer().Rotate() })
}

func TestSetJWKSStatus(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, nil)
	status := func(u string) int {
		t.Helper()
		resp, err := http.Get(u)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	assert.Equal(t, http.StatusOK, status(s.JWKSURL()))
	s.SetJWKSStatus(http.StatusServiceUnavailable)
	assert.Equal(t, http.StatusServiceUnavailable, status(s.JWKSURL()))
	assert.Equal(t, http.StatusServiceUnavailable, status(s.URL+"/.well-known/openid-configuration"))
	s.Reset()
	assert.Equal(t, http.StatusOK, status(s.JWKSURL()))
	assert.Equal(t, 3, s.JWKSCalls(), "every JWKS request is counted, failed or not")
}

// stsError is the body of an STS Query error response.
type stsError struct {
	XMLName   xml.Name `xml:"ErrorResponse"`
	Type      string   `xml:"Error>Type"`
	Code      string   `xml:"Error>Code"`
	Message   string   `xml:"Error>Message"`
	RequestID string   `xml:"RequestId"`
}

// validForm returns the form of a valid GetWebIdentityToken request.
func validForm() url.Values {
	return url.Values{
		"Action":              {"GetWebIdentityToken"},
		"Version":             {"2011-06-15"},
		"Audience.member.1":   {"aud"},
		"SigningAlgorithm":    {"RS256"},
		"DurationSeconds":     {"300"},
		"Tags.member.1.Key":   {"k"},
		"Tags.member.1.Value": {"v"},
	}
}

// postRaw sends a request without the SDK. If signed, it carries an
// Authorization header that looks like SigV4; the server checks no more.
func postRaw(t *testing.T, s *Server, method, contentType, body string, signed bool) (int, stsError) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, s.URL+"/", strings.NewReader(body))
	require.NoError(t, err)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if signed {
		req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260301/us-east-1/sts/aws4_request, SignedHeaders=host, Signature=00")
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var e stsError
	if resp.StatusCode != http.StatusOK {
		require.Equal(t, "text/xml", resp.Header.Get("Content-Type"))
		require.NoError(t, xml.Unmarshal(b, &e), "error body")
		assert.NotEmpty(t, e.RequestID)
	}
	return resp.StatusCode, e
}

const formType = "application/x-www-form-urlencoded"

func TestValidation(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, nil)
	long := func(n int) string { return strings.Repeat("x", n) }
	tests := []struct {
		name    string
		edit    func(url.Values)
		wantMsg string // "" means the request succeeds
	}{
		{"valid", func(url.Values) {}, ""},
		{"no audience", func(f url.Values) { f.Del("Audience.member.1") }, "Value null at 'audience' failed to satisfy constraint: Member must not be null"},
		{"empty audience list", func(f url.Values) { f.Del("Audience.member.1"); f.Set("Audience", "") }, "Value null at 'audience'"},
		{"ten audiences", func(f url.Values) {
			for i := 2; i <= 10; i++ {
				f.Set("Audience.member."+strconv.Itoa(i), "a")
			}
		}, ""},
		{"eleven audiences", func(f url.Values) {
			for i := 2; i <= 11; i++ {
				f.Set("Audience.member."+strconv.Itoa(i), "a")
			}
		}, "Value at 'audience' failed to satisfy constraint: Member must have length less than or equal to 10"},
		{"empty audience", func(f url.Values) { f.Set("Audience.member.1", "") }, "Value '' at 'audience.1.member' failed to satisfy constraint: Member must have length greater than or equal to 1"},
		{"audience of 1000", func(f url.Values) { f.Set("Audience.member.1", long(1000)) }, ""},
		{"audience of 1001", func(f url.Values) { f.Set("Audience.member.1", long(1001)) }, "Value at 'audience.1.member' failed to satisfy constraint: Member must have length less than or equal to 1000"},
		{"bad member index", func(f url.Values) { f.Set("Audience.member.0", "a") }, "Parameter name 'Audience.member.0' is not a valid member of a list"},
		{"default duration", func(f url.Values) { f.Del("DurationSeconds") }, ""},
		{"duration 59", func(f url.Values) { f.Set("DurationSeconds", "59") }, "Value '59' at 'durationSeconds' failed to satisfy constraint: Member must have value greater than or equal to 60"},
		{"duration 60", func(f url.Values) { f.Set("DurationSeconds", "60") }, ""},
		{"duration 3600", func(f url.Values) { f.Set("DurationSeconds", "3600") }, ""},
		{"duration 3601", func(f url.Values) { f.Set("DurationSeconds", "3601") }, "Value '3601' at 'durationSeconds' failed to satisfy constraint: Member must have value less than or equal to 3600"},
		{"duration not a number", func(f url.Values) { f.Set("DurationSeconds", "5m") }, "Value '5m' at 'durationSeconds' failed to satisfy constraint: Member must be an integer"},
		{"no algorithm", func(f url.Values) { f.Del("SigningAlgorithm") }, "Value null at 'signingAlgorithm' failed to satisfy constraint: Member must not be null"},
		{"ES384", func(f url.Values) { f.Set("SigningAlgorithm", "ES384") }, ""},
		{"HS256", func(f url.Values) { f.Set("SigningAlgorithm", "HS256") }, "Value 'HS256' at 'signingAlgorithm' failed to satisfy constraint: Member must satisfy enum value set: [RS256, ES384]"},
		{"lower-case rs256", func(f url.Values) { f.Set("SigningAlgorithm", "rs256") }, "Value 'rs256' at 'signingAlgorithm'"},
		{"50 tags", func(f url.Values) {
			for i := 1; i <= 50; i++ {
				f.Set("Tags.member."+strconv.Itoa(i)+".Key", "k"+strconv.Itoa(i))
			}
		}, ""},
		{"51 tags", func(f url.Values) {
			for i := 1; i <= 51; i++ {
				f.Set("Tags.member."+strconv.Itoa(i)+".Key", "k"+strconv.Itoa(i))
			}
		}, "Value at 'tags' failed to satisfy constraint: Member must have length less than or equal to 50"},
		{"tag without key", func(f url.Values) { f.Del("Tags.member.1.Key") }, "Value null at 'tags.1.member.key' failed to satisfy constraint: Member must not be null"},
		{"empty tag key", func(f url.Values) { f.Set("Tags.member.1.Key", "") }, "Value '' at 'tags.1.member.key' failed to satisfy constraint: Member must have length greater than or equal to 1"},
		{"tag key of 128", func(f url.Values) { f.Set("Tags.member.1.Key", long(128)) }, ""},
		{"tag key of 129", func(f url.Values) { f.Set("Tags.member.1.Key", long(129)) }, "Value at 'tags.1.member.key' failed to satisfy constraint: Member must have length less than or equal to 128"},
		{"empty tag value", func(f url.Values) { f.Set("Tags.member.1.Value", "") }, ""},
		{"tag value of 256", func(f url.Values) { f.Set("Tags.member.1.Value", long(256)) }, ""},
		{"tag value of 257", func(f url.Values) { f.Set("Tags.member.1.Value", long(257)) }, "Value at 'tags.1.member.value' failed to satisfy constraint: Member must have length less than or equal to 256"},
		{"duplicate tag keys", func(f url.Values) { f.Set("Tags.member.2.Key", "K") }, "Duplicate tag keys found"},
		{"two problems", func(f url.Values) { f.Del("SigningAlgorithm"); f.Set("DurationSeconds", "1") }, "2 validation errors detected: Value '1' at 'durationSeconds'"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := validForm()
			tc.edit(f)
			status, e := postRaw(t, s, http.MethodPost, formType, f.Encode(), true)
			if tc.wantMsg == "" {
				assert.Equal(t, http.StatusOK, status, "error %s: %s", e.Code, e.Message)
				return
			}
			assert.Equal(t, http.StatusBadRequest, status)
			assert.Equal(t, "Sender", e.Type)
			assert.Equal(t, "ValidationError", e.Code)
			assert.Contains(t, e.Message, tc.wantMsg)
		})
	}
}

func TestValidationThroughSDK(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, nil)
	in := input("RS256", "aud")
	in.DurationSeconds = aws.Int32(59)
	_, err := s.Client().GetWebIdentityToken(t.Context(), in)
	var apiErr smithy.APIError
	require.ErrorAs(t, err, &apiErr)
	assert.Equal(t, "ValidationError", apiErr.ErrorCode())
	assert.Contains(t, apiErr.ErrorMessage(), "'durationSeconds'")
}

func TestProtocolErrors(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, nil)
	tests := []struct {
		name        string
		method      string
		contentType string
		body        string
		signed      bool
		wantStatus  int
		wantCode    string
	}{
		{"unsigned", http.MethodPost, formType, validForm().Encode(), false, 403, "MissingAuthenticationToken"},
		{"wrong action", http.MethodPost, formType, "Action=AssumeRole&Version=2011-06-15", true, 400, "InvalidAction"},
		{"wrong version", http.MethodPost, formType, "Action=GetWebIdentityToken&Version=2099-01-01", true, 400, "InvalidAction"},
		{"no version", http.MethodPost, formType, "Action=GetWebIdentityToken", true, 400, "InvalidAction"},
		{"no action", http.MethodPost, formType, "Version=2011-06-15", true, 400, "MissingAction"},
		{"not a form", http.MethodPost, "application/json", `{"Action":"GetWebIdentityToken"}`, true, 400, "MissingAction"},
		{"bad form", http.MethodPost, formType, "Action=%zz", true, 400, "MalformedQueryString"},
		{"too large", http.MethodPost, formType, "Action=" + strings.Repeat("x", maxBodyBytes+1), true, 413, "RequestEntityTooLarge"},
		{"GET", http.MethodGet, "", "", true, 405, "MethodNotAllowed"},
		{"PUT", http.MethodPut, formType, validForm().Encode(), true, 405, "MethodNotAllowed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			status, e := postRaw(t, s, tc.method, tc.contentType, tc.body, tc.signed)
			assert.Equal(t, tc.wantStatus, status)
			assert.Equal(t, tc.wantCode, e.Code)
			assert.NotEmpty(t, e.Message)
		})
	}
}

func TestInjectedErrorCodes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		code       string
		wantStatus int
	}{
		{"AccessDenied", 403},
		{"OutboundWebIdentityFederationDisabledException", 403},
		{"Throttling", 400},
		{"InternalFailure", 500},
		{"ServiceUnavailable", 503},
		{"ValidationError", 400},
		{"MissingAuthenticationToken", 403},
		{"InvalidAction", 400},
		{"SomethingNew", 400},
		{"<&>", 400},
	}
	for _, tc := range tests {
		t.Run(tc.code, func(t *testing.T) {
			t.Parallel()
			s := newTestServer(t, nil)
			s.FailAll(tc.code)
			_, err := s.Client(noRetry).GetWebIdentityToken(t.Context(), input("RS256", "aud"))
			var apiErr smithy.APIError
			require.ErrorAs(t, err, &apiErr)
			assert.Equal(t, tc.code, apiErr.ErrorCode())
			assert.Equal(t, "ststest: injected fault", apiErr.ErrorMessage())
			var re *awshttp.ResponseError
			require.ErrorAs(t, err, &re)
			assert.Equal(t, tc.wantStatus, re.HTTPStatusCode())
			assert.NotEmpty(t, re.ServiceRequestID())
			assert.Equal(t, 1, s.Calls())
		})
	}
}

func TestErrorTypeOnTheWire(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, nil)
	s.FailNext(1, "ServiceUnavailable")
	status, e := postRaw(t, s, http.MethodPost, formType, validForm().Encode(), true)
	assert.Equal(t, http.StatusServiceUnavailable, status)
	assert.Equal(t, "Receiver", e.Type)
	s.FailNext(1, "AccessDenied")
	status, e = postRaw(t, s, http.MethodPost, formType, validForm().Encode(), true)
	assert.Equal(t, http.StatusForbidden, status)
	assert.Equal(t, "Sender", e.Type)
}

func TestSuccessOnTheWire(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, nil)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, s.URL, strings.NewReader(validForm().Encode()))
	require.NoError(t, err)
	req.Header.Set("Content-Type", formType)
	req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260301/us-east-1/sts/aws4_request")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "text/xml", resp.Header.Get("Content-Type"))
	var body struct {
		XMLName    xml.Name `xml:"https://sts.amazonaws.com/doc/2011-06-15/ GetWebIdentityTokenResponse"`
		Token      string   `xml:"GetWebIdentityTokenResult>WebIdentityToken"`
		Expiration string   `xml:"GetWebIdentityTokenResult>Expiration"`
		RequestID  string   `xml:"ResponseMetadata>RequestId"`
	}
	require.NoError(t, xml.NewDecoder(resp.Body).Decode(&body))
	assert.Len(t, strings.Split(body.Token, "."), 3)
	exp, err := time.Parse(time.RFC3339, body.Expiration)
	require.NoError(t, err)
	assert.True(t, strings.HasSuffix(body.Expiration, "Z"), "Expiration %q is UTC", body.Expiration)
	assert.InDelta(t, time.Now().Add(300*time.Second).Unix(), exp.Unix(), 60)
	assert.Regexp(t, `^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`, body.RequestID)
}

func TestFederationDisabledIsTyped(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, nil)
	s.FailNext(1, "OutboundWebIdentityFederationDisabledException")
	_, err := s.Client().GetWebIdentityToken(t.Context(), input("RS256", "aud"))
	var disabled *types.OutboundWebIdentityFederationDisabledException
	require.ErrorAs(t, err, &disabled)
	assert.Equal(t, "ststest: injected fault", disabled.ErrorMessage())
	assert.Equal(t, 1, s.Calls(), "a 403 client fault is not retried")
}

func TestFailNext(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, nil)
	c := s.Client(noRetry)
	s.FailNext(2, "AccessDenied")
	for i := range 2 {
		_, err := c.GetWebIdentityToken(t.Context(), input("RS256", "aud"))
		var apiErr smithy.APIError
		require.ErrorAs(t, err, &apiErr, "call %d", i+1)
		assert.Equal(t, "AccessDenied", apiErr.ErrorCode())
	}
	_, err := c.GetWebIdentityToken(t.Context(), input("RS256", "aud"))
	require.NoError(t, err)
	assert.Equal(t, 3, s.Calls())

	s.FailNext(1, "")
	_, err = c.GetWebIdentityToken(t.Context(), input("RS256", "aud"))
	var apiErr smithy.APIError
	require.ErrorAs(t, err, &apiErr)
	assert.Equal(t, "InternalFailure", apiErr.ErrorCode(), "empty code")

	s.FailNext(5, "AccessDenied")
	s.FailNext(0, "AccessDenied")
	_, err = c.GetWebIdentityToken(t.Context(), input("RS256", "aud"))
	require.NoError(t, err, "FailNext(0) cancels")
}

func TestFailAllUntilReset(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, nil)
	c := s.Client(noRetry)
	s.FailAll("AccessDenied")
	s.FailNext(1, "Throttling")
	for range 3 {
		_, err := c.GetWebIdentityToken(t.Context(), input("RS256", "aud"))
		var apiErr smithy.APIError
		require.ErrorAs(t, err, &apiErr)
		assert.Equal(t, "AccessDenied", apiErr.ErrorCode(), "FailAll takes precedence")
	}
	s.Reset()
	_, err := c.GetWebIdentityToken(t.Context(), input("RS256", "aud"))
	require.NoError(t, err)
	assert.Equal(t, 4, s.Calls(), "Reset keeps the counters")
}

func TestThrottlingRetries(t *testing.T) {
	t.Parallel()
	t.Run("default retryer", func(t *testing.T) {
		t.Parallel()
		s := newTestServer(t, nil)
		s.FailAll("Throttling")
		_, err := s.Client(noBackoff).GetWebIdentityToken(t.Context(), input("RS256", "aud"))
		var apiErr smithy.APIError
		require.ErrorAs(t, err, &apiErr)
		assert.Equal(t, "Throttling", apiErr.ErrorCode())
		assert.Equal(t, retry.DefaultMaxAttempts, s.Calls())
	})
	t.Run("recovers", func(t *testing.T) {
		t.Parallel()
		s := newTestServer(t, nil)
		s.FailNext(2, "Throttling")
		_, err := s.Client(noBackoff).GetWebIdentityToken(t.Context(), input("RS256", "aud"))
		require.NoError(t, err)
		assert.Equal(t, 3, s.Calls())
	})
	t.Run("one attempt", func(t *testing.T) {
		t.Parallel()
		s := newTestServer(t, nil)
		s.FailAll("Throttling")
		_, err := s.Client(noBackoff, noRetry).GetWebIdentityToken(t.Context(), input("RS256", "aud"))
		require.Error(t, err)
		assert.Equal(t, 1, s.Calls())
	})
}

func TestLatencyHonoursContext(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, nil)
	s.SetLatency(time.Hour)
	// Cancel once the server holds the call, not after a fixed deadline
	// that a busy machine may spend before the request arrives.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		_, err := s.Client().GetWebIdentityToken(ctx, input("RS256", "aud"))
		errc <- err
	}()
	require.Eventually(t, func() bool { return s.Calls() == 1 }, 10*time.Second, time.Millisecond)
	cancel()
	select {
	case err := <-errc:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(10 * time.Second):
		t.Fatal("the call did not end when its context was cancelled")
	}

	s.SetLatency(0)
	_, err := s.Client().GetWebIdentityToken(t.Context(), input("RS256", "aud"))
	require.NoError(t, err)
}

func TestLatencyDelaysAnswer(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, nil)
	s.SetLatency(30 * time.Millisecond)
	start := time.Now()
	_, err := s.Client().GetWebIdentityToken(t.Context(), input("RS256", "aud"))
	require.NoError(t, err)
	assert.GreaterOrEqual(t, time.Since(start), 30*time.Millisecond)
}

// heldServer starts a server whose held calls announce themselves on the
// returned channel.
func heldServer(t *testing.T) (*Server, <-chan struct{}) {
	held := make(chan struct{}, 10)
	s := newTestServer(t, func(s *Server) { s.onHold = func() { held <- struct{}{} } })
	return s, held
}

type result struct {
	out *sts.GetWebIdentityTokenOutput
	err error
}

// callAsync starts a call and returns a channel that receives its result.
func callAsync(ctx context.Context, c *sts.Client, aud string) <-chan result {
	done := make(chan result, 1)
	go func() {
		out, err := c.GetWebIdentityToken(ctx, input("RS256", aud))
		done <- result{out, err}
	}()
	return done
}

func TestHoldBlocksUntilRelease(t *testing.T) {
	t.Parallel()
	s, held := heldServer(t)
	release := s.Hold()
	done := callAsync(t.Context(), s.Client(), "aud")
	<-held
	assert.Equal(t, 1, s.Calls(), "held calls are counted")
	select {
	case r := <-done:
		t.Fatalf("call returned while held: %v", r.err)
	default:
	}
	release()
	r := <-done
	require.NoError(t, r.err)
	assert.NotEmpty(t, aws.ToString(r.out.WebIdentityToken))
	release() // idempotent

	_, err := s.Client().GetWebIdentityToken(t.Context(), input("RS256", "aud"))
	require.NoError(t, err, "released holds do not block later calls")
}

func TestResetReleasesHolds(t *testing.T) {
	t.Parallel()
	s, held := heldServer(t)
	release := s.Hold()
	defer release()
	done := callAsync(t.Context(), s.Client(), "aud")
	<-held
	s.Reset()
	require.NoError(t, (<-done).err)
}

func TestHeldCallHonoursContext(t *testing.T) {
	t.Parallel()
	s, held := heldServer(t)
	release := s.Hold()
	defer release()
	ctx, cancel := context.WithCancel(t.Context())
	done := callAsync(ctx, s.Client(), "aud")
	<-held
	cancel()
	require.ErrorIs(t, (<-done).err, context.Canceled)
}

func TestSetTokenLifetime(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, nil)
	keys := fetchKeys(t, s)
	lifetime := func(d *int32) int64 {
		in := input("RS256", "aud")
		in.DurationSeconds = d
		out, err := s.Client().GetWebIdentityToken(t.Context(), in)
		require.NoError(t, err)
		c := verify(t, keys, aws.ToString(out.WebIdentityToken), "RS256")
		assert.Equal(t, c.Exp, out.Expiration.Unix())
		return c.Exp - c.Iat
	}
	s.SetTokenLifetime(90 * time.Second)
	assert.Equal(t, int64(90), lifetime(aws.Int32(900)))
	assert.Equal(t, int64(90), lifetime(nil))
	s.SetTokenLifetime(10 * time.Second) // shorter than STS allows: tests of expiry
	assert.Equal(t, int64(10), lifetime(nil))
	s.SetTokenLifetime(0)
	assert.Equal(t, int64(900), lifetime(aws.Int32(900)))
	s.SetTokenLifetime(time.Hour)
	s.Reset()
	assert.Equal(t, int64(300), lifetime(nil))
}

func TestCallsFor(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, nil)
	c := s.Client()
	for _, aud := range [][]string{{"a"}, {"a", "b"}, {"b", "a"}, {"b", "a", "a"}, {"c"}} {
		_, err := c.GetWebIdentityToken(t.Context(), input("RS256", aud...))
		require.NoError(t, err)
	}
	s.FailNext(1, "AccessDenied")
	_, err := c.GetWebIdentityToken(t.Context(), input("RS256", "c"))
	require.Error(t, err)

	assert.Equal(t, 6, s.Calls())
	assert.Equal(t, 1, s.CallsFor("a"))
	assert.Equal(t, 3, s.CallsFor("a", "b"))
	assert.Equal(t, 3, s.CallsFor("b", "a"))
	assert.Equal(t, 3, s.CallsFor("b", "b", "a"))
	assert.Equal(t, 2, s.CallsFor("c"), "failed calls count too")
	assert.Equal(t, 0, s.CallsFor("d"))
	assert.Equal(t, 0, s.CallsFor())
}

func TestConcurrentCalls(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, nil)
	c := s.Client()
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			if i%5 == 0 {
				s.SetLatency(time.Millisecond)
				s.Reset()
			}
			_, err := c.GetWebIdentityToken(t.Context(), input("ES384", "aud"))
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		assert.NoError(t, err)
	}
	assert.Equal(t, n, s.CallsFor("aud"))
}

func TestCloseWithHeldRequest(t *testing.T) {
	// Not parallel: it checks that Close leaves no goroutine behind.
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	held := make(chan struct{}, 1)
	s := NewUnstartedServer()
	s.onHold = func() { held <- struct{}{} }
	s.Start()
	s.Hold() // never released
	s.SetLatency(time.Hour)
	done := callAsync(context.Background(), s.Client(noRetry), "aud")
	<-held
	s.Close()
	r := <-done
	require.Error(t, r.err)
	s.Close() // idempotent
}

func TestCloseWithDelayedRequest(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	s := NewServer()
	s.SetLatency(time.Hour)
	done := callAsync(context.Background(), s.Client(noRetry), "aud")
	// The call may or may not have arrived when Close runs; either way it
	// must end promptly.
	s.Close()
	require.Error(t, (<-done).err)
}

func TestStartTwicePanics(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, nil)
	assert.PanicsWithValue(t, "ststest: Server already started", s.Start)
}

func TestBadConfigPanics(t *testing.T) {
	t.Parallel()
	s := NewUnstartedServer()
	s.AccountID = "12345"
	assert.Panics(t, s.Start)
	s = NewUnstartedServer()
	s.PrincipalARN = "ststest"
	assert.PanicsWithValue(t, `ststest: PrincipalARN must be an ARN starting with "arn:", got ststest`, s.Start)
	assert.Panics(t, func() { NewUnstartedServer().Client() })
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, nil)
	assert.Equal(t, s.URL, s.Issuer())
	assert.True(t, strings.HasPrefix(s.URL, "http://127.0.0.1:"))
	assert.False(t, strings.HasSuffix(s.URL, "/"))
	keys := fetchKeys(t, s)
	out, err := s.Client().GetWebIdentityToken(t.Context(), input("RS256", "aud"))
	require.NoError(t, err)
	c := verify(t, keys, aws.ToString(out.WebIdentityToken), "RS256")
	assert.Equal(t, "123456789012", c.AWS.AWSAccount)
	assert.Equal(t, "us-east-1", c.AWS.SourceRegion)
	assert.InDelta(t, time.Now().Unix(), c.Iat, 60)
}

// FuzzRequest checks that no form body makes the server panic or answer
// with anything but a well-formed response.
func FuzzRequest(f *testing.F) {
	f.Add(validForm().Encode())
	f.Add("Action=GetWebIdentityToken&Version=2011-06-15&Audience.member.99999999999999999999=a")
	f.Add("Action=GetWebIdentityToken&Version=2011-06-15&Tags.member.1=x&Tags.member.1.Key.Extra=y")
	f.Add("Action=GetWebIdentityToken&Version=2011-06-15&Audience.member.1=%00&SigningAlgorithm=%FF")
	f.Add("Action=GetWebIdentityToken&Version=2011-06-15&DurationSeconds=-9223372036854775809")
	s := NewServer()
	defer s.Close()
	f.Fuzz(func(t *testing.T, body string) {
		status, _ := postRaw(t, s, http.MethodPost, formType, body, true)
		if status != http.StatusOK && (status < 400 || status > 599) {
			t.Errorf("status = %d, want 200 or an error", status)
		}
	})
}

func TestCloseUnstarted(t *testing.T) {
	t.Parallel()
	s := NewUnstartedServer()
	assert.NotPanics(t, s.Close)
}

// TestListener checks that a server started on a listener of the caller's
// serves there: its URL, and so its issuer, is that listener's address.
func TestListener(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := NewUnstartedServer()
	s.Listener = ln
	s.Start()
	t.Cleanup(s.Close)
	assert.Equal(t, "http://"+ln.Addr().String(), s.URL)
	assert.Equal(t, s.URL, s.Issuer())
	assert.Same(t, ln, s.Listener)
	out, err := s.Client().GetWebIdentityToken(t.Context(), &sts.GetWebIdentityTokenInput{
		Audience: []string{"https://api.example.com"}, SigningAlgorithm: aws.String("RS256"),
	})
	require.NoError(t, err)
	assert.NotEmpty(t, aws.ToString(out.WebIdentityToken))
	assert.Equal(t, 1, s.Calls())

	d := NewServer()
	t.Cleanup(d.Close)
	assert.Equal(t, "http://"+d.Listener.Addr().String(), d.URL, "Start sets Listener")
}
