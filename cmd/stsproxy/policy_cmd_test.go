package main

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// policyDoc is the shape of the policy document, decoded strictly enough to
// prove stdout is one valid JSON document and nothing else.
type policyDoc struct {
	Version   string
	Statement []struct {
		Sid, Effect, Action, Resource string
		Condition                     map[string]map[string]any
	}
}

func TestPolicyCommand(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		args      []string
		env       map[string]string
		want      string // the policy, compared as JSON
		wantNotes []string
	}{
		{
			name: "static audiences from flags and env, tags",
			args: []string{"--token-audience", "https://b.example", "--token-audience", "https://a.example",
				"--token-signing-algorithm", "ES384", "--token-duration", "15m"},
			env: map[string]string{"TOKEN_TAGS": "team=payments,env=prod"},
			want: `{"Version":"2012-10-17","Statement":[
				{"Sid":"GetWebIdentityToken","Effect":"Allow","Action":"sts:GetWebIdentityToken","Resource":"*",
				 "Condition":{
				   "ForAllValues:StringEquals":{"sts:IdentityTokenAudience":["https://a.example","https://b.example"]},
				   "NumericLessThanEquals":{"sts:DurationSeconds":900},
				   "StringEquals":{"sts:SigningAlgorithm":"ES384"}}},
				{"Sid":"TagGetWebIdentityToken","Effect":"Allow","Action":"sts:TagGetWebIdentityToken","Resource":"*",
				 "Condition":{"ForAllValues:StringEquals":{"aws:TagKeys":["env","team"]}}}]}`,
			wantNotes: []string{"aws:TagKeys allows these keys with any value"},
		},
		{
			name: "pinned upstream: its origin, port dropped",
			env:  map[string]string{"UPSTREAM_HOST": "API.example.com:8443"},
			want: `{"Version":"2012-10-17","Statement":[
				{"Sid":"GetWebIdentityToken","Effect":"Allow","Action":"sts:GetWebIdentityToken","Resource":"*",
				 "Condition":{
				   "ForAllValues:StringEquals":{"sts:IdentityTokenAudience":["https://api.example.com"]},
				   "NumericLessThanEquals":{"sts:DurationSeconds":3600},
				   "StringEquals":{"sts:SigningAlgorithm":"RS256"}}}]}`,
			wantNotes: []string{"pinned upstream's origin https://api.example.com"},
		},
		{
			name: "header routing with allowed hosts: patterns",
			args: []string{"--allowed-hosts", "*.example.com:443,[2001:db8::1],Api.Other.example", "--upstream-scheme", "http"},
			want: `{"Version":"2012-10-17","Statement":[
				{"Sid":"GetWebIdentityTokenForAudiencePatterns","Effect":"Allow","Action":"sts:GetWebIdentityToken","Resource":"*",
				 "Condition":{
				   "ForAllValues:StringLike":{"sts:IdentityTokenAudience":["http://*.example.com","http://[2001:db8::1]","http://api.other.example"]},
				   "NumericLessThanEquals":{"sts:DurationSeconds":3600},
				   "StringEquals":{"sts:SigningAlgorithm":"RS256"}}}]}`,
			wantNotes: []string{"audiences are dynamic", "origins of --allowed-hosts"},
		},
		{
			name: "header routing without allowed hosts: any audience, with a note",
			want: `{"Version":"2012-10-17","Statement":[
				{"Sid":"GetWebIdentityToken","Effect":"Allow","Action":"sts:GetWebIdentityToken","Resource":"*",
				 "Condition":{
				   "NumericLessThanEquals":{"sts:DurationSeconds":3600},
				   "StringEquals":{"sts:SigningAlgorithm":"RS256"}}}]}`,
			wantNotes: []string{"audiences are dynamic", "cannot restrict sts:IdentityTokenAudience"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), append([]string{"policy"}, tc.args...), envOf(tc.env), &stdout, &stderr)
			require.Equal(t, 0, code, "stderr: %s", stderr.String())

			dec := json.NewDecoder(bytes.NewReader(stdout.Bytes()))
			dec.DisallowUnknownFields()
			var doc policyDoc
			require.NoError(t, dec.Decode(&doc))
			assert.False(t, dec.More(), "stdout holds more than one JSON document")
			assert.JSONEq(t, tc.want, stdout.String())
			for _, n := range tc.wantNotes {
				assert.Contains(t, stderr.String(), n)
			}
		})
	}
}

func TestPolicyCommandBadConfig(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"policy", "--token-duration", "2h"}, envOf(nil), &stdout, &stderr)
	assert.Equal(t, 2, code)
	assert.Empty(t, stdout.String())
	assert.Contains(t, stderr.String(), `invalid --token-duration/TOKEN_DURATION "2h": want 60s to 1h`)
}
