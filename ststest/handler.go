package ststest

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Wire constants of the STS Query protocol.
const (
	stsAction    = "GetWebIdentityToken"
	stsVersion   = "2011-06-15"
	stsNamespace = "https://sts.amazonaws.com/doc/2011-06-15/"
	sigV4Prefix  = "AWS4-HMAC-SHA256 Credential="
	maxBodyBytes = 1 << 20

	discoveryPath = "/.well-known/openid-configuration"
	jwksPath      = "/.well-known/jwks.json"
)

// Limits of GetWebIdentityToken, as documented in the STS API reference.
const (
	minAudiences           = 1
	maxAudiences           = 10
	maxAudienceLen         = 1000
	minDurationSeconds     = 60
	maxDurationSeconds     = 3600
	defaultDurationSeconds = 300
	maxTags                = 50
	maxTagKeyLen           = 128
	maxTagValueLen         = 256
)

// STS error codes the server produces itself.
const (
	codeValidationError    = "ValidationError"
	codeMissingAuthToken   = "MissingAuthenticationToken"
	codeInvalidAction      = "InvalidAction"
	codeMissingAction      = "MissingAction"
	codeMalformedQuery     = "MalformedQueryString"
	codeMethodNotAllowed   = "MethodNotAllowed"
	codeInternalFailure    = "InternalFailure"
	codeServiceUnavailable = "ServiceUnavailable"
	codeRequestTooLarge    = "RequestEntityTooLarge"
	codeFederationDisabled = "OutboundWebIdentityFederationDisabledException"
)

// Error messages and fixed claim values.
const (
	injectedFaultMessage    = "ststest: injected fault"
	serverClosedMessage     = "ststest: server is closed"
	missingAuthTokenMessage = "Request is missing Authentication Token"

	// maxEchoLen bounds how much of a client-supplied value a message echoes.
	maxEchoLen = 64
)

// errorStatus is the HTTP status of each known STS error code. Codes not
// listed get 400.
var errorStatus = map[string]int{
	"AccessDenied":            http.StatusForbidden,
	codeFederationDisabled:    http.StatusForbidden,
	"Throttling":              http.StatusBadRequest,
	codeInternalFailure:       http.StatusInternalServerError,
	codeServiceUnavailable:    http.StatusServiceUnavailable,
	codeValidationError:       http.StatusBadRequest,
	codeMissingAuthToken:      http.StatusForbidden,
	codeInvalidAction:         http.StatusBadRequest,
	codeMissingAction:         http.StatusBadRequest,
	codeMalformedQuery:        http.StatusBadRequest,
	codeMethodNotAllowed:      http.StatusMethodNotAllowed,
	codeRequestTooLarge:       http.StatusRequestEntityTooLarge,
	"ExpiredToken":            http.StatusBadRequest,
	"InvalidClientTokenId":    http.StatusForbidden,
	"RegionDisabledException": http.StatusForbidden,
}

// statusOf returns the HTTP status for an STS error code.
func statusOf(code string) int {
	if st, ok := errorStatus[code]; ok {
		return st
	}
	return http.StatusBadRequest
}

// handler returns the HTTP handler of the server.
func (s *Server) handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/":
			s.serveSTS(w, r)
		case discoveryPath:
			s.serveDiscovery(w, r)
		case jwksPath:
			s.serveJWKS(w, r)
		default:
			http.NotFound(w, r)
		}
	})
}

// jwksFault answers with the status set by [Server.SetJWKSStatus] and
// reports whether it did.
func (s *Server) jwksFault(w http.ResponseWriter) bool {
	s.mu.Lock()
	code := s.jwksStatus
	s.mu.Unlock()
	if code == 0 {
		return false
	}
	http.Error(w, injectedFaultMessage, code)
	return true
}

// serveDiscovery serves the OpenID Connect discovery document.
func (s *Server) serveDiscovery(w http.ResponseWriter, r *http.Request) {
	if s.jwksFault(w) {
		return
	}
	doc, err := json.Marshal(struct {
		Issuer          string   `json:"issuer"`
		JWKSURI         string   `json:"jwks_uri"`
		SigningAlgs     []string `json:"id_token_signing_alg_values_supported"`
		ResponseTypes   []string `json:"response_types_supported"`
		SubjectTypes    []string `json:"subject_types_supported"`
		ClaimsSupported []string `json:"claims_supported"`
		ScopesSupported []string `json:"scopes_supported"`
	}{
		Issuer:          s.ts.URL,
		JWKSURI:         s.ts.URL + jwksPath,
		SigningAlgs:     []string{algRS256, algES384},
		ResponseTypes:   []string{"id_token"},
		SubjectTypes:    []string{"public"},
		ClaimsSupported: []string{"iss", "sub", "aud", "iat", "exp", "jti", "https://sts.amazonaws.com/"},
		ScopesSupported: []string{"openid"},
	})
	if err != nil {
		http.Error(w, "ststest: encode discovery document", http.StatusInternalServerError)
		return
	}
	serveJSON(w, r, doc)
}

// serveJWKS serves the public keys that verify minted tokens.
func (s *Server) serveJWKS(w http.ResponseWriter, r *http.Request) {
	s.jwksCalls.Add(1)
	if s.jwksFault(w) {
		return
	}
	serveJSON(w, r, s.keys.Load().jwks)
}

// serveJSON answers GET and HEAD with a JSON document, anything else with 405.
func serveJSON(w http.ResponseWriter, r *http.Request, doc []byte) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "ststest: method not allowed", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(doc)))
	if r.Method == http.MethodGet {
		_, _ = w.Write(doc)
	}
}

// serveSTS serves the STS Query API at "/".
func (s *Server) serveSTS(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, codeMethodNotAllowed, "ststest: the STS Query API accepts only POST, got "+truncate(r.Method))
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
	if err := r.ParseForm(); err != nil {
		if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
			writeError(w, codeRequestTooLarge, fmt.Sprintf("ststest: request body exceeds %d bytes", maxBodyBytes))
			return
		}
		writeError(w, codeMalformedQuery, "ststest: malformed form body")
		return
	}
	form := r.Form
	action, version := form.Get("Action"), form.Get("Version")
	switch {
	case action == "":
		writeError(w, codeMissingAction, "Missing Action")
		return
	case action == callerIdentityAction && version == stsVersion:
		s.serveCallerIdentity(w, r)
		return
	case action != stsAction || version != stsVersion:
		writeError(w, codeInvalidAction, fmt.Sprintf("Could not find operation %s for version %s", truncate(action), truncate(version)))
		return
	}

	req := parseRequest(form)
	s.countCall(req.audience)

	if !strings.HasPrefix(r.Header.Get("Authorization"), sigV4Prefix) {
		writeError(w, codeMissingAuthToken, missingAuthTokenMessage)
		return
	}

	if s.throttled(w) {
		return
	}
	f := s.takeFaults()
	if err := s.wait(r.Context(), f); err != nil {
		if errors.Is(err, errClosed) {
			writeError(w, codeServiceUnavailable, serverClosedMessage)
		}
		return // the client is gone; nobody reads an answer
	}
	if f.failCode != "" {
		writeError(w, f.failCode, injectedFaultMessage)
		return
	}
	if problems := req.validate(); len(problems) > 0 {
		writeError(w, codeValidationError, validationMessage(problems))
		return
	}
	if s.checkSession(w, requestedSeconds(req)) {
		return
	}
	s.mint(w, req, f.lifetime)
}

// errClosed is returned by wait when the server is closed.
var errClosed = errors.New("ststest: server closed")

// wait blocks for the holds and latency of f. It returns early with the
// context's error if ctx is done, or with errClosed if the server closes.
func (s *Server) wait(ctx context.Context, f faults) error {
	if len(f.holds) > 0 && s.onHold != nil {
		s.onHold()
	}
	for _, ch := range f.holds {
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.closed:
			return errClosed
		}
	}
	if f.latency <= 0 {
		return nil
	}
	t := time.NewTimer(f.latency)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-s.closed:
		return errClosed
	}
}

// mint signs a token for a valid request and writes the success response.
func (s *Server) mint(w http.ResponseWriter, req *request, lifetime time.Duration) {
	seconds := requestedSeconds(req)
	if lifetime > 0 {
		seconds = int64(lifetime / time.Second)
	}
	iat := s.now().Unix()
	exp := iat + seconds
	c := &claims{
		Iss: s.ts.URL, // not s.URL, which Start sets only after serving begins
		Sub: s.principalARN,
		Iat: iat,
		Exp: exp,
		Jti: newID(),
		AWS: awsClaims{
			AWSAccount:          s.accountID,
			SourceRegion:        s.region,
			PrincipalID:         s.principalARN,
			OrgID:               s.orgID,
			OUPath:              s.ouPath,
			IdentityStoreUserID: s.identityStoreUserID,
			OriginalSessionExp:  s.originalSessionExp(),
		},
	}
	if len(req.audience) == 1 {
		c.Aud = req.audience[0]
	} else {
		c.Aud = req.audience
	}
	if len(req.tags) > 0 {
		c.AWS.RequestTags = make(map[string]string, len(req.tags))
		for _, t := range req.tags {
			c.AWS.RequestTags[*t.key] = t.value
		}
	}
	token, err := s.keys.Load().current.sign(*req.algorithm, c)
	if err != nil {
		writeError(w, codeInternalFailure, "ststest: could not sign the token")
		return
	}
	id := newID()
	w.Header().Set("Content-Type", "text/xml")
	w.Header().Set("X-Amzn-Requestid", id)
	w.WriteHeader(http.StatusOK)
	fmt.Fprintf(w, `<GetWebIdentityTokenResponse xmlns="%s"><GetWebIdentityTokenResult><WebIdentityToken>%s</WebIdentityToken><Expiration>%s</Expiration></GetWebIdentityTokenResult><ResponseMetadata><RequestId>%s</RequestId></ResponseMetadata></GetWebIdentityTokenResponse>`,
		stsNamespace, token, time.Unix(exp, 0).UTC().Format(time.RFC3339), id)
}

// requestedSeconds is the token duration a valid request asks for.
func requestedSeconds(req *request) int64 {
	if req.duration != nil {
		return int64(*req.duration)
	}
	return defaultDurationSeconds
}

// writeError writes an STS Query error response for code.
func writeError(w http.ResponseWriter, code, message string) {
	status := statusOf(code)
	typ := "Sender"
	if status >= 500 {
		typ = "Receiver"
	}
	id := newID()
	w.Header().Set("Content-Type", "text/xml")
	w.Header().Set("X-Amzn-Requestid", id)
	w.WriteHeader(status)
	fmt.Fprintf(w, `<ErrorResponse xmlns="%s"><Error><Type>%s</Type><Code>%s</Code><Message>%s</Message></Error><RequestId>%s</RequestId></ErrorResponse>`,
		stsNamespace, typ, escape(code), escape(message), id)
}

// escape returns s escaped for XML character data.
func escape(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s)) // a strings.Builder never fails
	return b.String()
}

// truncate shortens a client-supplied value before it is echoed in a message.
func truncate(s string) string {
	if len(s) <= maxEchoLen {
		return s
	}
	cut := maxEchoLen
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

// validationMessage formats problems the way STS does:
// "2 validation errors detected: A; B".
func validationMessage(problems []string) string {
	plural := "s"
	if len(problems) == 1 {
		plural = ""
	}
	return strconv.Itoa(len(problems)) + " validation error" + plural + " detected: " + strings.Join(problems, "; ")
}

// request is a parsed GetWebIdentityToken request. Absent optional
// parameters are nil.
type request struct {
	audience   []string
	algorithm  *string
	duration   *int
	durationIn *string // the raw DurationSeconds, if present
	tags       []tagParam
	badNames   []string // malformed member parameter names
}

// tagParam is one Tags.member.N entry.
type tagParam struct {
	index int
	key   *string
	value string
}

// parseRequest extracts the GetWebIdentityToken parameters from form. It
// never fails: problems are recorded and reported by validate.
func parseRequest(form map[string][]string) *request {
	req := &request{}
	aud := map[int]string{}
	tags := map[int]*tagParam{}
	for name, values := range form {
		if len(values) == 0 {
			continue
		}
		v := values[0]
		switch {
		case name == "SigningAlgorithm":
			req.algorithm = &v
		case name == "DurationSeconds":
			req.durationIn = &v
			if n, err := strconv.Atoi(v); err == nil {
				req.duration = &n
			}
		case strings.HasPrefix(name, "Audience.member."):
			i, ok := memberIndex(strings.TrimPrefix(name, "Audience.member."))
			if !ok {
				req.badNames = append(req.badNames, name)
				continue
			}
			aud[i] = v
		case strings.HasPrefix(name, "Tags.member."):
			rest := strings.TrimPrefix(name, "Tags.member.")
			idx, field, _ := strings.Cut(rest, ".")
			i, ok := memberIndex(idx)
			if !ok || (field != "Key" && field != "Value") {
				req.badNames = append(req.badNames, name)
				continue
			}
			t := tags[i]
			if t == nil {
				t = &tagParam{index: i}
				tags[i] = t
			}
			if field == "Key" {
				t.key = &v
			} else {
				t.value = v
			}
		}
	}
	for _, i := range slices.Sorted(maps.Keys(aud)) {
		req.audience = append(req.audience, aud[i])
	}
	for _, i := range slices.Sorted(maps.Keys(tags)) {
		req.tags = append(req.tags, *tags[i])
	}
	slices.Sort(req.badNames)
	return req
}

// memberIndex parses the 1-based index of a list member parameter.
func memberIndex(s string) (int, bool) {
	i, err := strconv.Atoi(s)
	return i, err == nil && i >= 1 && strconv.Itoa(i) == s
}

// validate checks req against the constraints of the STS API and returns
// one message per violation, in a stable order.
func (req *request) validate() []string {
	var p []string
	for _, name := range req.badNames {
		p = append(p, fmt.Sprintf("Parameter name '%s' is not a valid member of a list", truncate(name)))
	}
	switch n := len(req.audience); {
	case n < minAudiences:
		p = append(p, "Value null at 'audience' failed to satisfy constraint: Member must not be null")
	case n > maxAudiences:
		p = append(p, fmt.Sprintf("Value at 'audience' failed to satisfy constraint: Member must have length less than or equal to %d", maxAudiences))
	}
	for i, a := range req.audience {
		switch n := utf8.RuneCountInString(a); {
		case n < 1:
			p = append(p, fmt.Sprintf("Value '' at 'audience.%d.member' failed to satisfy constraint: Member must have length greater than or equal to 1", i+1))
		case n > maxAudienceLen:
			p = append(p, fmt.Sprintf("Value at 'audience.%d.member' failed to satisfy constraint: Member must have length less than or equal to %d", i+1, maxAudienceLen))
		}
	}
	if req.durationIn != nil {
		switch d := req.duration; {
		case d == nil:
			p = append(p, fmt.Sprintf("Value '%s' at 'durationSeconds' failed to satisfy constraint: Member must be an integer", truncate(*req.durationIn)))
		case *d < minDurationSeconds:
			p = append(p, fmt.Sprintf("Value '%d' at 'durationSeconds' failed to satisfy constraint: Member must have value greater than or equal to %d", *d, minDurationSeconds))
		case *d > maxDurationSeconds:
			p = append(p, fmt.Sprintf("Value '%d' at 'durationSeconds' failed to satisfy constraint: Member must have value less than or equal to %d", *d, maxDurationSeconds))
		}
	}
	switch alg := req.algorithm; {
	case alg == nil:
		p = append(p, "Value null at 'signingAlgorithm' failed to satisfy constraint: Member must not be null")
	case *alg != algRS256 && *alg != algES384:
		p = append(p, fmt.Sprintf("Value '%s' at 'signingAlgorithm' failed to satisfy constraint: Member must satisfy enum value set: [%s, %s]", truncate(*alg), algRS256, algES384))
	}
	if len(req.tags) > maxTags {
		p = append(p, fmt.Sprintf("Value at 'tags' failed to satisfy constraint: Member must have length less than or equal to %d", maxTags))
	}
	seen := map[string]bool{}
	duplicate := false
	for i, t := range req.tags {
		switch {
		case t.key == nil:
			p = append(p, fmt.Sprintf("Value null at 'tags.%d.member.key' failed to satisfy constraint: Member must not be null", i+1))
		case utf8.RuneCountInString(*t.key) < 1:
			p = append(p, fmt.Sprintf("Value '' at 'tags.%d.member.key' failed to satisfy constraint: Member must have length greater than or equal to 1", i+1))
		case utf8.RuneCountInString(*t.key) > maxTagKeyLen:
			p = append(p, fmt.Sprintf("Value at 'tags.%d.member.key' failed to satisfy constraint: Member must have length less than or equal to %d", i+1, maxTagKeyLen))
		default:
			k := strings.ToLower(*t.key)
			duplicate = duplicate || seen[k]
			seen[k] = true
		}
		if utf8.RuneCountInString(t.value) > maxTagValueLen {
			p = append(p, fmt.Sprintf("Value at 'tags.%d.member.value' failed to satisfy constraint: Member must have length less than or equal to %d", i+1, maxTagValueLen))
		}
	}
	if duplicate {
		p = append(p, "Duplicate tag keys found. Please note that Tag keys are case insensitive.")
	}
	return p
}
