package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stsauth/stsauth/ststest"
)

func TestVerifyCommand(t *testing.T) {
	t.Parallel()
	srv := ststest.NewServer()
	t.Cleanup(srv.Close)
	out, err := srv.Client().GetWebIdentityToken(t.Context(), &sts.GetWebIdentityTokenInput{
		Audience:         []string{"https://api.example.com"},
		SigningAlgorithm: aws.String("ES384"),
	})
	require.NoError(t, err)
	tok := aws.ToString(out.WebIdentityToken)
	sig := tok[strings.LastIndex(tok, ".")+1:]

	tests := []struct {
		name     string
		args     []string
		stdin    string
		wantCode int
		wantOut  string // in stdout
		wantErr  string // in stderr
	}{
		{"argument", []string{"--issuer", srv.URL, "--allow-insecure-issuer", tok}, "", 0, `"iss": "` + srv.URL + `"`, ""},
		{"stdin dash", []string{"--issuer", srv.URL, "--allow-insecure-issuer", "--audience", "https://api.example.com", "-"}, tok + "\n", 0, `"org_id": "o-ststest000"`, ""},
		{"stdin absent, Bearer prefix", []string{"--issuer", srv.URL, "--allow-insecure-issuer"}, "Bearer " + tok, 0, `"aws_account": "123456789012"`, ""},
		{"wrong audience", []string{"--issuer", srv.URL, "--allow-insecure-issuer", "--audience", "https://other.example.com", tok}, "", 1, "", "stsproxy: verify: wrong audience"},
		{"other issuer", []string{"--issuer", "https://0000.tokens.sts.global.api.aws", tok}, "", 1, "", "verify: untrusted issuer"},
		{"garbage", []string{"--issuer", srv.URL, "--allow-insecure-issuer", "not-a-token"}, "", 1, "", "verify: malformed token"},
		{"http issuer without the switch", []string{"--issuer", srv.URL, tok}, "", 2, "", "add --allow-insecure-issuer"},
		{"no issuer", []string{tok}, "", 2, "", "missing --issuer"},
		{"two tokens", []string{"--issuer", srv.URL, "a", "b"}, "", 2, "", `stsproxy: verify: unexpected argument "b"`},
		{"unknown flag", []string{"--nope"}, "", 2, "", "stsproxy: verify: unknown flag --nope\n"},
		{"mistyped flag", []string{"--isuer", srv.URL}, "", 2, "", "stsproxy: verify: unknown flag --isuer (did you mean --issuer?)\n"},
		{"bad boolean", []string{"--issuer", srv.URL, "--allow-insecure-issuer=maybe"}, "", 2, "", `stsproxy: verify: invalid --allow-insecure-issuer/ALLOW_INSECURE_ISSUER "maybe": want true or false`},
		{"help", []string{"--help"}, "", 0, "Usage: stsproxy verify --issuer URL", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			code := runVerify(context.Background(), tc.args, envOf(nil), strings.NewReader(tc.stdin), &stdout, &stderr)
			assert.Equal(t, tc.wantCode, code, "stderr: %s", stderr.String())
			assert.Contains(t, stdout.String(), tc.wantOut)
			assert.Contains(t, stderr.String(), tc.wantErr)
			assert.NotContains(t, stdout.String()+stderr.String(), sig, "the token is never printed")
			if tc.wantCode == 0 && tc.name != "help" {
				var claims map[string]any
				require.NoError(t, json.Unmarshal(stdout.Bytes(), &claims), "stdout is the claims as JSON")
			}
		})
	}
}
