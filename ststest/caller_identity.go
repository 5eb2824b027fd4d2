package ststest

import (
	"fmt"
	"net/http"
	"strings"
)

// callerIdentityAction is the STS action that names the caller.
const callerIdentityAction = "GetCallerIdentity"

// callerSessionName is the role session name of the fake caller.
const callerSessionName = "ststest-session"

// FailCallerIdentity makes every GetCallerIdentity call fail with the STS
// error code, for example "InvalidClientTokenId" or "ExpiredToken", until
// it is called with "" or [Server.Reset] is called. GetWebIdentityToken
// faults ([Server.FailNext], [Server.FailAll]) do not apply to
// GetCallerIdentity, so a test can fail one action and not the other.
func (s *Server) FailCallerIdentity(code string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.callerIdentityFault = code
}

// CallerARN returns the ARN GetCallerIdentity answers with. For a role
// principal (see [Server.PrincipalARN]) it is the role session
// arn:aws:sts::<account>:assumed-role/<role name>/ststest-session, while the
// sub claim of minted tokens is the role ARN, as with AWS; any other
// principal is returned as it is. It panics if the server is not started.
func (s *Server) CallerARN() string {
	if !s.started.Load() {
		panic("ststest: CallerARN called before Start")
	}
	if _, role, ok := strings.Cut(s.principalARN, ":role/"); ok {
		return "arn:aws:sts::" + s.accountID + ":assumed-role/" + role[strings.LastIndex(role, "/")+1:] + "/" + callerSessionName
	}
	return s.principalARN
}

// callerUserID is the UserId GetCallerIdentity answers with: a role's
// unique ID and the session name, or a user's unique ID.
func (s *Server) callerUserID() string {
	if strings.Contains(s.principalARN, ":role/") {
		return "AROASTSTESTEXAMPLE000:" + callerSessionName
	}
	return "AIDASTSTESTEXAMPLE000"
}

// serveCallerIdentity answers GetCallerIdentity, which needs no IAM
// permission: it fails only for unsigned requests and injected faults. It is
// not counted by [Server.Calls].
func (s *Server) serveCallerIdentity(w http.ResponseWriter, r *http.Request) {
	if !strings.HasPrefix(r.Header.Get("Authorization"), sigV4Prefix) {
		writeError(w, codeMissingAuthToken, missingAuthTokenMessage)
		return
	}
	s.mu.Lock()
	code := s.callerIdentityFault
	s.mu.Unlock()
	if code != "" {
		writeError(w, code, injectedFaultMessage)
		return
	}
	id := newID()
	w.Header().Set("Content-Type", "text/xml")
	w.Header().Set("X-Amzn-Requestid", id)
	w.WriteHeader(http.StatusOK)
	fmt.Fprintf(w, `<GetCallerIdentityResponse xmlns="%s"><GetCallerIdentityResult><Arn>%s</Arn><UserId>%s</UserId><Account>%s</Account></GetCallerIdentityResult><ResponseMetadata><RequestId>%s</RequestId></ResponseMetadata></GetCallerIdentityResponse>`,
		stsNamespace, escape(s.CallerARN()), escape(s.callerUserID()), s.accountID, id)
}
