package stsauth_test

import (
	"encoding/json"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stsauth/stsauth"
)

func TestLeastPrivilegePolicy(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		p    stsauth.PolicyParams
		want string
	}{
		{
			name: "zero value: RS256, 1 h, any audience",
			want: `{"Version":"2012-10-17","Statement":[
				{"Sid":"GetWebIdentityToken","Effect":"Allow","Action":"sts:GetWebIdentityToken","Resource":"*",
				 "Condition":{"NumericLessThanEquals":{"sts:DurationSeconds":3600},"StringEquals":{"sts:SigningAlgorithm":"RS256"}}}]}`,
		},
		{
			name: "static audiences sorted and deduplicated, tags",
			p: stsauth.PolicyParams{
				Audiences:        []string{"https://b.example", "https://a.example", "https://b.example"},
				SigningAlgorithm: stsauth.ES384,
				Duration:         15 * time.Minute,
				TagKeys:          []string{"team", "env", "team"},
			},
			want: `{"Version":"2012-10-17","Statement":[
				{"Sid":"GetWebIdentityToken","Effect":"Allow","Action":"sts:GetWebIdentityToken","Resource":"*",
				 "Condition":{
				   "ForAllValues:StringEquals":{"sts:IdentityTokenAudience":["https://a.example","https://b.example"]},
				   "NumericLessThanEquals":{"sts:DurationSeconds":900},
				   "StringEquals":{"sts:SigningAlgorithm":"ES384"}}},
				{"Sid":"TagGetWebIdentityToken","Effect":"Allow","Action":"sts:TagGetWebIdentityToken","Resource":"*",
				 "Condition":{"ForAllValues:StringEquals":{"aws:TagKeys":["env","team"]}}}]}`,
		},
		{
			name: "patterns only",
			p:    stsauth.PolicyParams{AudiencePatterns: []string{"https://*.example.com"}, Duration: time.Minute},
			want: `{"Version":"2012-10-17","Statement":[
				{"Sid":"GetWebIdentityTokenForAudiencePatterns","Effect":"Allow","Action":"sts:GetWebIdentityToken","Resource":"*",
				 "Condition":{
				   "ForAllValues:StringLike":{"sts:IdentityTokenAudience":["https://*.example.com"]},
				   "NumericLessThanEquals":{"sts:DurationSeconds":60},
				   "StringEquals":{"sts:SigningAlgorithm":"RS256"}}}]}`,
		},
		{
			name: "exact audiences and patterns: one statement each",
			p:    stsauth.PolicyParams{Audiences: []string{"https://a.example"}, AudiencePatterns: []string{"https://*.b.example"}},
			want: `{"Version":"2012-10-17","Statement":[
				{"Sid":"GetWebIdentityToken","Effect":"Allow","Action":"sts:GetWebIdentityToken","Resource":"*",
				 "Condition":{
				   "ForAllValues:StringEquals":{"sts:IdentityTokenAudience":["https://a.example"]},
				   "NumericLessThanEquals":{"sts:DurationSeconds":3600},
				   "StringEquals":{"sts:SigningAlgorithm":"RS256"}}},
				{"Sid":"GetWebIdentityTokenForAudiencePatterns","Effect":"Allow","Action":"sts:GetWebIdentityToken","Resource":"*",
				 "Condition":{
				   "ForAllValues:StringLike":{"sts:IdentityTokenAudience":["https://*.b.example"]},
				   "NumericLessThanEquals":{"sts:DurationSeconds":3600},
				   "StringEquals":{"sts:SigningAlgorithm":"RS256"}}}]}`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			doc, err := stsauth.LeastPrivilegePolicy(tc.p)
			require.NoError(t, err)
			got, err := json.Marshal(doc)
			require.NoError(t, err)
			assert.JSONEq(t, tc.want, string(got))
		})
	}
}

func TestLeastPrivilegePolicyRejects(t *testing.T) {
	t.Parallel()
	long := make([]byte, stsauth.MaxAudienceLength+1)
	for i := range long {
		long[i] = 'a'
	}
	tests := []struct {
		name, want string
		p          stsauth.PolicyParams
	}{
		{"algorithm", `signing algorithm "HS256"`, stsauth.PolicyParams{SigningAlgorithm: "HS256"}},
		{"short duration", "duration 59s", stsauth.PolicyParams{Duration: 59 * time.Second}},
		{"long duration", "duration 1h0m1s", stsauth.PolicyParams{Duration: time.Hour + time.Second}},
		{"fractional duration", "duration 1m0.5s", stsauth.PolicyParams{Duration: time.Minute + 500*time.Millisecond}},
		{"empty audience", `audience ""`, stsauth.PolicyParams{Audiences: []string{""}}},
		{"long audience", "want 1 to 1000 characters", stsauth.PolicyParams{Audiences: []string{string(long)}}},
		{"empty pattern", `audience pattern ""`, stsauth.PolicyParams{AudiencePatterns: []string{""}}},
		{"empty tag key", `tag key ""`, stsauth.PolicyParams{TagKeys: []string{""}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := stsauth.LeastPrivilegePolicy(tc.p)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	keys := make([]string, stsauth.MaxTags+1)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%d", i)
	}
	_, err := stsauth.LeastPrivilegePolicy(stsauth.PolicyParams{TagKeys: keys})
	assert.ErrorContains(t, err, "51 tag keys, want at most 50")
}

// The policy for a role whose workloads call one API with RS256 tokens of
// 15 minutes, tagged with their team.
func ExampleLeastPrivilegePolicy() {
	doc, err := stsauth.LeastPrivilegePolicy(stsauth.PolicyParams{
		Audiences: []string{"https://api.example.com"},
		Duration:  15 * time.Minute,
		TagKeys:   []string{"team"},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	_ = enc.Encode(doc)
	// Output:
	// {
	//   "Version": "2012-10-17",
	//   "Statement": [
	//     {
	//       "Sid": "GetWebIdentityToken",
	//       "Effect": "Allow",
	//       "Action": "sts:GetWebIdentityToken",
	//       "Resource": "*",
	//       "Condition": {
	//         "ForAllValues:StringEquals": {
	//           "sts:IdentityTokenAudience": [
	//             "https://api.example.com"
	//           ]
	//         },
	//         "NumericLessThanEquals": {
	//           "sts:DurationSeconds": 900
	//         },
	//         "StringEquals": {
	//           "sts:SigningAlgorithm": "RS256"
	//         }
	//       }
	//     },
	//     {
	//       "Sid": "TagGetWebIdentityToken",
	//       "Effect": "Allow",
	//       "Action": "sts:TagGetWebIdentityToken",
	//       "Resource": "*",
	//       "Condition": {
	//         "ForAllValues:StringEquals": {
	//           "aws:TagKeys": [
	//             "team"
	//           ]
	//         }
	//       }
	//     }
	//   ]
	// }
}
