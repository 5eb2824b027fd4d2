package ststest

import (
	"net"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

// Defaults for the exported configuration fields of [Server].
const (
	// DefaultAccountID is the AWS account ID used when [Server.AccountID] is empty.
	DefaultAccountID = "123456789012"
	// DefaultRegion is the AWS Region used when [Server.Region] is empty.
	DefaultRegion = "us-east-1"
	// DefaultOrgID is the AWS Organizations ID used when [Server.OrgID] is
	// empty. It has the shape of a real one: "o-" and 10 characters.
	DefaultOrgID = "o-ststest000"
	// DefaultRoleName is the IAM role of the default principal,
	// arn:aws:iam::<account>:role/ststest, used when [Server.PrincipalARN]
	// is empty.
	DefaultRoleName = "ststest"
)

// DefaultOUPath is the organizational unit path used when [Server.OUPath]
// is nil: one path from the organization root to the account's OU, in the
// shape real tokens carry, "<org>/<root>/<ou>/.../".
func DefaultOUPath() []string {
	return []string{DefaultOrgID + "/r-st00/ou-st00-ststest0/"}
}

// Static credentials that [Server.Client] signs requests with. The server
// only checks that a request is signed, not the signature.
const (
	clientAccessKeyID     = "AKIASTSTESTEXAMPLE00"
	clientSecretAccessKey = "ststest/secret/access/key/not/a/real/one"
)

// A Server is a fake STS endpoint listening on a system-chosen port on the
// local loopback interface, for use in tests. It answers GetWebIdentityToken
// and serves OIDC discovery and JWKS documents for the tokens it mints.
//
// Configure the exported fields between [NewUnstartedServer] and
// [Server.Start]; changing them afterwards has no effect. All methods are
// safe for concurrent use by multiple goroutines once the server is started.
type Server struct {
	// URL is the base URL of the server, of the form http://127.0.0.1:port
	// with no trailing slash. It is also the issuer (the iss claim) of every
	// token the server mints. It is empty until the server is started.
	URL string

	// AccountID is the 12-digit AWS account ID of the fake caller. It appears
	// in the sub claim and in the aws_account claim. If empty,
	// [DefaultAccountID] is used.
	AccountID string

	// Region is the AWS Region of the fake endpoint. It appears in the
	// source_region claim and is the Region of [Server.Client]. If empty,
	// [DefaultRegion] is used.
	Region string

	// OrgID is the AWS Organizations ID of the fake caller, the org_id
	// claim. If empty, [DefaultOrgID] is used.
	OrgID string

	// OUPath is the organizational unit path of the fake caller's account,
	// the ou_path claim: an array of path strings like
	// "o-xxxxxxxxxx/r-xxxx/ou-xxxx-xxxxxxxx/", as real tokens carry. If nil,
	// [DefaultOUPath] is used; an empty non-nil slice mints an empty array.
	OUPath []string

	// PrincipalARN is the ARN of the fake caller, the sub claim and the
	// principal_id claim. For a role session real STS puts the role ARN
	// here, not the session ARN. If empty, the role
	// arn:aws:iam::<AccountID>:role/ststest ([DefaultRoleName]) is used.
	// It must start with "arn:".
	PrincipalARN string

	// IdentityStoreUserID is the IAM Identity Center user of the fake
	// caller, the identity_store_user_id claim that real tokens carry for
	// SSO users. If empty, the claim is omitted.
	IdentityStoreUserID string

	// Listener is the listener the server accepts connections on, as in
	// [httptest.Server]. If nil when [Server.Start] runs, the server
	// listens on a free port of the loopback interface; set it between
	// [NewUnstartedServer] and Start to serve on a known address, such as
	// the fixed loopback port of a long-running demo. Start sets it.
	Listener net.Listener

	// Now is the clock used for the iat and exp claims and the Expiration of
	// the response. If nil, [time.Now] is used. Setting it lets tests share a
	// fake clock with the code under test.
	Now func() time.Time

	ts        *httptest.Server
	keys      atomic.Pointer[keySet] // replaced by Rotate
	jwksCalls atomic.Int64           // JWKS requests received
	closed    chan struct{}          // closed by Close to unblock held and delayed calls
	closeOnce sync.Once
	started   atomic.Bool

	// Resolved copies of the exported configuration, fixed at Start.
	accountID           string
	region              string
	orgID               string
	ouPath              []string
	principalARN        string
	identityStoreUserID string
	now                 func() time.Time

	// onHold, if non-nil, is called when a request starts waiting on a hold.
	// In-package tests set it before Start to synchronise without sleeping.
	onHold func()

	calls atomic.Int64 // GetWebIdentityToken requests received

	sessionExpiry atomic.Pointer[time.Time] // SetSessionExpiry; nil: none
	throttle      throttle                  // SetThrottle

	mu           sync.Mutex     // guards the fields below
	callsFor     map[string]int // by audienceKey
	failNext     int
	failNextCode string
	failAll      string
	latency      time.Duration
	lifetime     time.Duration
	holds        map[*hold]struct{}
	jwksStatus   int // SetJWKSStatus; 0 means serve normally

	callerIdentityFault string // FailCallerIdentity; "" answers normally
}

// hold is one outstanding [Server.Hold].
type hold struct {
	ch   chan struct{} // closed on release
	once sync.Once
}

func (h *hold) release() { h.once.Do(func() { close(h.ch) }) }

// NewServer starts and returns a new Server. The caller should call
// [Server.Close] when finished, to shut it down.
func NewServer() *Server {
	s := NewUnstartedServer()
	s.Start()
	return s
}

// NewUnstartedServer returns a new Server but doesn't start it. After
// changing its configuration, the caller should call [Server.Start], and
// then [Server.Close] when finished.
func NewUnstartedServer() *Server {
	s := &Server{
		closed:   make(chan struct{}),
		callsFor: make(map[string]int),
		holds:    make(map[*hold]struct{}),
	}
	s.ts = httptest.NewUnstartedServer(s.handler())
	return s
}

// Start starts a server from [NewUnstartedServer]. It panics if the server
// was already started or if the configuration is invalid.
func (s *Server) Start() {
	if !s.started.CompareAndSwap(false, true) {
		panic("ststest: Server already started")
	}
	s.accountID = s.AccountID
	if s.accountID == "" {
		s.accountID = DefaultAccountID
	}
	if len(s.accountID) != 12 || strings.Trim(s.accountID, "0123456789") != "" {
		panic("ststest: AccountID must be 12 digits, got " + s.accountID)
	}
	s.region = s.Region
	if s.region == "" {
		s.region = DefaultRegion
	}
	s.orgID = s.OrgID
	if s.orgID == "" {
		s.orgID = DefaultOrgID
	}
	s.ouPath = slices.Clone(s.OUPath)
	if s.OUPath == nil {
		s.ouPath = DefaultOUPath()
	}
	s.principalARN = s.PrincipalARN
	if s.principalARN == "" {
		s.principalARN = "arn:aws:iam::" + s.accountID + ":role/" + DefaultRoleName
	}
	if !strings.HasPrefix(s.principalARN, "arn:") {
		panic("ststest: PrincipalARN must be an ARN starting with \"arn:\", got " + s.principalARN)
	}
	s.identityStoreUserID = s.IdentityStoreUserID
	s.now = s.Now
	if s.now == nil {
		s.now = time.Now
	}
	s.keys.Store(newKeySet(0))
	if s.Listener != nil {
		s.ts.Listener.Close()
		s.ts.Listener = s.Listener
	}
	s.ts.Start()
	s.Listener = s.ts.Listener
	s.URL = s.ts.URL
}

// Close shuts down the server and blocks until all outstanding requests on
// it have completed. Calls waiting on [Server.Hold] or [Server.SetLatency]
// are unblocked and answered with ServiceUnavailable. Close may be called
// more than once.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		close(s.closed)
		s.ts.Close()
	})
}

// Client returns an STS client wired to the server: static credentials
// (expiring with the session of [Server.SetSessionExpiry], if set), the
// server's Region, BaseEndpoint set to [Server.URL], the SDK's default
// retryer, and an HTTP client whose idle connections are closed by
// [Server.Close]. The optFns are applied last, so they can override any of
// these, for example to set RetryMaxAttempts. Client panics if the server
// is not started.
func (s *Server) Client(optFns ...func(*sts.Options)) *sts.Client {
	if !s.started.Load() {
		panic("ststest: Client called before Start")
	}
	return sts.New(sts.Options{
		Region:       s.region,
		Credentials:  aws.CredentialsProviderFunc(s.retrieveCredentials),
		BaseEndpoint: aws.String(s.URL),
		HTTPClient:   s.ts.Client(),
	}, optFns...)
}

// Issuer returns the issuer of the tokens the server mints, the iss claim.
// It equals [Server.URL].
func (s *Server) Issuer() string { return s.URL }

// JWKSURL returns the URL of the JWKS document holding the public keys that
// verify the server's tokens: [Server.URL] + "/.well-known/jwks.json".
func (s *Server) JWKSURL() string { return s.URL + jwksPath }

// Rotate makes the server sign new tokens with a new pair of keys (RS256
// and ES384) and publish them in its JWKS document ahead of the previous
// pair, which stays published, as issuers do during a key rotation. Keys
// from two or more rotations back are no longer published. Key IDs have the
// shape AWS uses and count rotations: RSA_0 and EC384_0 at Start, RSA_1 and
// EC384_1 after the first Rotate. Rotate panics if the server is not
// started.
func (s *Server) Rotate() {
	if !s.started.Load() {
		panic("ststest: Rotate called before Start")
	}
	for {
		old := s.keys.Load()
		if s.keys.CompareAndSwap(old, newKeySet(old.generation+1)) {
			return
		}
	}
}

// JWKSCalls returns the number of requests the server has received for its
// JWKS document, [Server.JWKSURL].
func (s *Server) JWKSCalls() int { return int(s.jwksCalls.Load()) }

// SetJWKSStatus makes the discovery and JWKS endpoints answer every request
// with the HTTP status code and no document, for example 503 to take the
// keys offline. 0 restores normal service; so does [Server.Reset]. Requests
// are still counted by [Server.JWKSCalls].
func (s *Server) SetJWKSStatus(code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.jwksStatus = code
}

// FailNext makes the next n GetWebIdentityToken calls fail with the STS
// error code, for example "Throttling" or "AccessDenied". Known codes get the
// HTTP status real STS uses; unknown codes get 400 with error type Sender.
// An empty code means "InternalFailure". A later FailNext replaces an
// earlier one; n <= 0 cancels it. [Server.FailAll] takes precedence while set.
func (s *Server) FailNext(n int, code string) {
	if code == "" {
		code = codeInternalFailure
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failNext, s.failNextCode = max(n, 0), code
}

// FailAll makes every GetWebIdentityToken call fail with the STS error code
// until [Server.Reset] is called. An empty code cancels it.
func (s *Server) FailAll(code string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failAll = code
}

// SetLatency makes each GetWebIdentityToken call wait d before it is
// answered. A call stops waiting early if its request is cancelled or the
// server is closed. d <= 0 removes the latency.
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency = max(d, 0)
}

// SetTokenLifetime makes minted tokens live for d (exp = iat + d),
// regardless of the DurationSeconds of the request, which is still
// validated. d is truncated to whole seconds; d <= 0 removes the override,
// so the requested duration (300 s by default) is used again.
func (s *Server) SetTokenLifetime(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lifetime = max(d.Truncate(time.Second), 0)
}

// Hold makes GetWebIdentityToken calls that arrive from now on block, after
// they are counted, until release is called or the server is closed. A
// blocked call also returns if its request is cancelled. release is
// idempotent and safe to call from any goroutine; [Server.Reset] releases
// every hold.
func (s *Server) Hold() (release func()) {
	h := &hold{ch: make(chan struct{})}
	s.mu.Lock()
	s.holds[h] = struct{}{}
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		delete(s.holds, h)
		s.mu.Unlock()
		h.release()
	}
}

// Reset clears the injected faults: FailNext, FailAll, latency, the token
// lifetime override, the JWKS status, FailCallerIdentity and holds,
// releasing the calls they block. It keeps the throttle
// ([Server.SetThrottle]), the session expiry ([Server.SetSessionExpiry]),
// the keys and the call counters.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failNext, s.failNextCode, s.failAll = 0, "", ""
	s.latency, s.lifetime = 0, 0
	s.jwksStatus = 0
	s.callerIdentityFault = ""
	for h := range s.holds {
		h.release()
	}
	clear(s.holds)
}

// Calls returns the number of GetWebIdentityToken requests the server has
// received, successful or not. A request is counted when it arrives, before
// holds, latency, faults and validation apply.
func (s *Server) Calls() int { return int(s.calls.Load()) }

// CallsFor returns the number of GetWebIdentityToken requests received for
// exactly this set of audiences. Order and duplicates are ignored on both
// sides: CallsFor("a", "b") counts requests for [b a] and [a b a].
func (s *Server) CallsFor(audience ...string) int {
	k := audienceKey(audience)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.callsFor[k]
}

// audienceKey returns the order- and duplicate-insensitive key of an
// audience set.
func audienceKey(aud []string) string {
	a := slices.Clone(aud)
	slices.Sort(a)
	a = slices.Compact(a)
	return strings.Join(a, "\x00")
}

// countCall records the arrival of a GetWebIdentityToken request.
func (s *Server) countCall(aud []string) {
	s.calls.Add(1)
	k := audienceKey(aud)
	s.mu.Lock()
	s.callsFor[k]++
	s.mu.Unlock()
}

// faults is the fault state a request sees when it arrives.
type faults struct {
	holds    []chan struct{}
	latency  time.Duration
	lifetime time.Duration
	failCode string
}

// takeFaults returns the faults for a request that just arrived, consuming
// one FailNext.
func (s *Server) takeFaults() faults {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := faults{latency: s.latency, lifetime: s.lifetime}
	for h := range s.holds {
		f.holds = append(f.holds, h.ch)
	}
	switch {
	case s.failAll != "":
		f.failCode = s.failAll
	case s.failNext > 0:
		s.failNext--
		f.failCode = s.failNextCode
	}
	return f
}
