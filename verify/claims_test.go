package verify

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDecodeClaims(t *testing.T) {
	t.Parallel()
	payload := []byte(`{"aud":"http://127.0.0.1","sub":"arn:aws:iam::123456789012:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_ExampleRole_0000000000000000","https://sts.amazonaws.com/":{"org_id":"o-xxxxxxxxxx","aws_account":"123456789012","ou_path":["o-xxxxxxxxxx/r-xxxx/ou-xxxx-xxxxxxxx/ou-xxxx-xxxxxxxx/"],"original_session_exp":"2026-04-25T02:41:15Z","source_region":"us-east-1","principal_id":"arn:aws:iam::123456789012:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_ExampleRole_0000000000000000","identity_store_user_id":"00000000-0000-0000-0000-000000000000","principal_tags":{"team":"payments","n":3},"request_tags":{"env":"prod"},"ec2_role_delivery":"2.0","future_claim":{"x":1}},"iss":"https://00000000-0000-0000-0000-000000000000.tokens.sts.global.api.aws","exp":1777056976,"iat":1777056076.5,"jti":"00000000-0000-0000-0000-000000000000"}`)
	w, err := decodeClaims(payload)
	require.NoError(t, err)
	c := w.claims(payload)
	assert.Equal(t, []string{"http://127.0.0.1"}, c.Audience)
	assert.Equal(t, "https://00000000-0000-0000-0000-000000000000.tokens.sts.global.api.aws", c.Issuer)
	assert.Equal(t, time.Unix(1777056976, 0), c.Expiry)
	assert.Equal(t, time.Unix(1777056076, 5e8), c.IssuedAt)
	assert.Equal(t, "123456789012", c.AWS.Account)
	assert.Equal(t, []string{"o-xxxxxxxxxx/r-xxxx/ou-xxxx-xxxxxxxx/ou-xxxx-xxxxxxxx/"}, c.AWS.OUPath)
	assert.Equal(t, c.Subject, c.AWS.PrincipalID)
	assert.Equal(t, time.Date(2026, 4, 25, 2, 41, 15, 0, time.UTC), c.AWS.OriginalSessionExp)
	assert.Equal(t, "00000000-0000-0000-0000-000000000000", c.AWS.IdentityStoreUserID)
	assert.Equal(t, map[string]string{"team": "payments", "n": "3"}, c.AWS.PrincipalTags, "non-string tag values are kept as JSON text")
	assert.Equal(t, map[string]string{"env": "prod"}, c.AWS.RequestTags)
	assert.Equal(t, "2.0", c.AWS.EC2RoleDelivery)
	var extra struct {
		AWS struct {
			Future map[string]int `json:"future_claim"`
		} `json:"https://sts.amazonaws.com/"`
	}
	require.NoError(t, c.Unmarshal(&extra))
	assert.Equal(t, map[string]int{"x": 1}, extra.AWS.Future, "unmodelled claims are in Raw")
}

func TestDecodeClaimsShapes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, json string
		ok         bool
	}{
		{"ou_path as the documentation's string", `{"https://sts.amazonaws.com/":{"ou_path":"o-x/r-y/"}}`, true},
		{"lenient AWS string", `{"https://sts.amazonaws.com/":{"source_region":["a"]}}`, true},
		{"aud number", `{"aud":1}`, false},
		{"aud array of numbers", `{"aud":[1]}`, false},
		{"iss number", `{"iss":1}`, false},
		{"exp string", `{"exp":"1"}`, false},
		{"exp negative", `{"exp":-1}`, false},
		{"exp huge", `{"exp":1e300}`, false},
		{"request_tags array", `{"https://sts.amazonaws.com/":{"request_tags":[]}}`, false},
		{"AWS claims a string", `{"https://sts.amazonaws.com/":"x"}`, false},
		{"not an object", `[]`, false},
	} {
		_, err := decodeClaims([]byte(tc.json))
		assert.Equal(t, tc.ok, err == nil, "%s: decodeClaims(%s) = %v", tc.name, tc.json, err)
	}
}

func TestPlainString(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want string
		ok   bool
	}{
		{`"abc"`, "abc", true},
		{`""`, "", true},
		{`"a\"b"`, "", false},
		{`"a\u0041"`, "", false},
		{`"é"`, "", false},
		{`1`, "", false},
		{`"`, "", false},
	} {
		got, ok := plainString([]byte(tc.in))
		assert.Equal(t, tc.ok, ok, "plainString(%s)", tc.in)
		assert.Equal(t, tc.want, got, "plainString(%s)", tc.in)
	}
	// Escaped and non-ASCII strings still decode, by the slow path.
	var s lenientString
	require.NoError(t, s.UnmarshalJSON([]byte(`"a\"é"`)))
	assert.Equal(t, lenientString(`a"é`), s)
}
