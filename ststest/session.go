package ststest

import (
	"context"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// STS error codes of a caller whose session ends. Both are answered with
// 400, the status of codes not in errorStatus.
const (
	codeSessionDurationEscalation = "SessionDurationEscalationException"
	codeExpiredToken              = "ExpiredToken"

	sessionEscalationMessage = "The requested token duration would extend the session beyond its original expiration time."
	expiredTokenMessage      = "The security token included in the request is expired"
)

// SetSessionExpiry makes the fake caller's credentials a session that
// expires at t, by the server's clock, as role and SSO sessions do. From then
// on, a GetWebIdentityToken call whose token would outlive t fails with
// SessionDurationEscalationException, as real STS answers; a call at or
// after t fails with ExpiredToken; minted tokens carry t in the
// original_session_exp claim; and the credentials of [Server.Client] report
// t as their expiry (aws.Credentials.CanExpire and Expires). The zero time
// removes the session expiry.
func (s *Server) SetSessionExpiry(t time.Time) {
	if t.IsZero() {
		s.sessionExpiry.Store(nil)
		return
	}
	t = t.Truncate(time.Second)
	s.sessionExpiry.Store(&t)
}

// checkSession answers the error STS gives a caller whose session cannot
// cover a token of seconds, and reports whether it did.
func (s *Server) checkSession(w http.ResponseWriter, seconds int64) bool {
	exp := s.sessionExpiry.Load()
	if exp == nil {
		return false
	}
	now := s.now()
	switch {
	case !now.Before(*exp):
		writeError(w, codeExpiredToken, expiredTokenMessage)
	case now.Add(time.Duration(seconds) * time.Second).After(*exp):
		writeError(w, codeSessionDurationEscalation, sessionEscalationMessage)
	default:
		return false
	}
	return true
}

// originalSessionExp is the original_session_exp claim: the session's
// expiry in RFC 3339, or empty.
func (s *Server) originalSessionExp() string {
	if exp := s.sessionExpiry.Load(); exp != nil {
		return exp.UTC().Format(time.RFC3339)
	}
	return ""
}

// retrieveCredentials is the credentials provider of [Server.Client]: the
// static test keys, expiring with the session when one is set.
func (s *Server) retrieveCredentials(context.Context) (aws.Credentials, error) {
	c := aws.Credentials{
		AccessKeyID:     clientAccessKeyID,
		SecretAccessKey: clientSecretAccessKey,
		Source:          "ststest",
	}
	if exp := s.sessionExpiry.Load(); exp != nil {
		c.CanExpire, c.Expires = true, *exp
	}
	return c, nil
}
