package ststest

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestGetCallerIdentity(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, principal, wantARN, wantUserID string
	}{
		{"default role", "", "arn:aws:sts::123456789012:assumed-role/ststest/ststest-session", "AROASTSTESTEXAMPLE000:ststest-session"},
		{"role with a path", "arn:aws:iam::123456789012:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_Dev_0123",
			"arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_Dev_0123/ststest-session", "AROASTSTESTEXAMPLE000:ststest-session"},
		{"user", "arn:aws:iam::123456789012:user/alice", "arn:aws:iam::123456789012:user/alice", "AIDASTSTESTEXAMPLE000"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newTestServer(t, func(s *Server) { s.PrincipalARN = tc.principal })
			out, err := s.Client(noRetry).GetCallerIdentity(context.Background(), &sts.GetCallerIdentityInput{})
			require.NoError(t, err)
			assert.Equal(t, tc.wantARN, *out.Arn)
			assert.Equal(t, tc.wantARN, s.CallerARN())
			assert.Equal(t, "123456789012", *out.Account)
			assert.Equal(t, tc.wantUserID, *out.UserId)
			assert.Zero(t, s.Calls(), "GetCallerIdentity is not a GetWebIdentityToken call")
		})
	}
}

func TestFailCallerIdentity(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, nil)
	s.FailAll("AccessDenied") // GetWebIdentityToken faults do not apply
	s.FailCallerIdentity("InvalidClientTokenId")
	ctx := context.Background()
	_, err := s.Client(noRetry).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	var apiErr smithy.APIError
	require.True(t, errors.As(err, &apiErr), "error %v", err)
	assert.Equal(t, "InvalidClientTokenId", apiErr.ErrorCode())

	s.FailCallerIdentity("")
	_, err = s.Client(noRetry).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	require.NoError(t, err)

	s.FailCallerIdentity("ExpiredToken")
	s.Reset()
	_, err = s.Client(noRetry).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	require.NoError(t, err, "Reset clears FailCallerIdentity")
}

func TestCallerIdentityUnsigned(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, nil)
	status, e := postRaw(t, s, http.MethodPost, formType, "Action=GetCallerIdentity&Version=2011-06-15", false)
	assert.Equal(t, http.StatusForbidden, status)
	assert.Equal(t, "MissingAuthenticationToken", e.Code)
}
