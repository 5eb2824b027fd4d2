package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/stsauth/stsauth"
	"github.com/stsauth/stsauth/verify"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Defaults and limits of "stsproxy inbound".
const (
	defaultInboundListenAddr = ":8443"
	defaultClaimHeaderPrefix = "X-Aws-"
	// maxReplayCacheSize bounds --replay-cache-size: an entry is a jti and
	// an expiry, so ten million is about a gigabyte.
	maxReplayCacheSize = 10_000_000
)

// inboundFlagSpecs are the flags of "stsproxy inbound" alone.
var inboundFlagSpecs = []flagSpec{
	{name: "upstream", inbound: true, usage: "URL of the service to forward verified requests to, http or https, such as http://127.0.0.1:8080 (required)"},
	{name: "issuer", kind: kindList, inbound: true, usage: "trusted token issuer, exactly as the iss claim: https://<id>.tokens.sts.global.api.aws, one per AWS account (required; repeatable; env is a comma list)"},
	{name: "audience", kind: kindList, inbound: true, usage: "accepted token audience (required; repeatable; env is a comma list)"},
	{name: "allow-insecure-issuer", kind: kindBool, def: "false", inbound: true, usage: "trust http issuers on loopback hosts, such as an STS emulator (tests and demos only)"},
	{name: "account", kind: kindList, inbound: true, usage: "allowed 12-digit AWS account (repeatable; env is a comma list); one per --issuer, in the same order, also binds each issuer to its account"},
	{name: "allow-org", kind: kindList, inbound: true, usage: "allowed AWS Organizations ID, o-... (repeatable; env is a comma list)"},
	{name: "allow-ou-prefix", kind: kindList, inbound: true, usage: "allowed OU path prefix, o-.../r-.../ou-.../, matching whole segments (repeatable; env is a comma list)"},
	{name: "allow-principal", kind: kindList, inbound: true, usage: "allowed principal_id ARN pattern, IAM StringLike: * any run, ? one character, case-sensitive (repeatable; env is a comma list)"},
	{name: "require-tag", kind: kindList, inbound: true, usage: "request tag key=value the token must carry (repeatable; env is a comma list); the caller chooses its tags, so this routes, it does not authorize"},
	{name: "replay-cache-size", def: "0", inbound: true, usage: "refuse a token whose jti was seen before, remembering up to this many, 0 (off) to " + strconv.Itoa(maxReplayCacheSize) + "; only for callers that mint a token per request"},
	{name: "claim-header-prefix", def: defaultClaimHeaderPrefix, inbound: true, usage: "prefix of the identity headers sent upstream; every inbound header with it is removed. A header name prefix ending in -"},
	{name: "forward-token", kind: kindBool, def: "false", inbound: true, usage: "pass the Authorization header on to the upstream; by default it is removed"},
	{name: "validate", kind: kindBool, def: "false", inbound: true, noEnv: true, usage: "check the configuration and exit: 0 if valid, 2 with the error if not; nothing is bound or fetched"},
}

// inboundCommand is "stsproxy inbound": the receiving side, a reverse proxy
// that verifies each request's token and forwards it with the verified
// identity as headers.
var inboundCommand = &command{
	name:     "stsproxy inbound",
	synopsis: "stsproxy inbound --upstream URL --issuer URL [--issuer URL...] --audience AUD [--audience AUD...] [flags]",
	summary:  "the receiving side: verify each request's token and forward it with the identity as headers",
	about: "A reverse proxy in front of a service that receives these tokens: it verifies each request's bearer token " +
		"with package verify (signature against the --issuer's published keys, issuer, audience, times, and the --account, " +
		"--allow-* and --require-tag policy), answers 401 or 403 when it fails, and otherwise forwards the request to " +
		"--upstream with the verified identity as --claim-header-prefix headers and, unless --forward-token, without the token.",
	flags: []string{"upstream", "issuer", "audience", "allow-insecure-issuer", "account", "allow-org", "allow-ou-prefix",
		"allow-principal", "require-tag", "replay-cache-size", "claim-header-prefix", "forward-token",
		"listen-addr", "upstream-timeout", "tls-cert", "tls-key", "metrics-enabled", "metrics-listen-addr", "metrics-path",
		"shutdown-delay", "shutdown-timeout", "log-level", "log-format", "access-log", "validate"},
	defaults: map[string]string{"listen-addr": defaultInboundListenAddr},
}

// inboundConfig is the validated configuration of "stsproxy inbound".
type inboundConfig struct {
	upstream     *url.URL      // scheme://host[:port][/path]
	verify       verify.Config // issuers, audiences, policy, replay guard
	headers      claimHeaders
	forwardToken bool
	validateOnly bool // --validate: check the configuration and exit

	// Set by tests, never by flags: the verifier's clock.
	now func() time.Time
}

// protectedHeaders are headers that a claim header prefix must not catch,
// since removing them would break requests.
var protectedHeaders = []string{"Accept-Encoding", "Access-Control-Request-Method", "Authorization", "Cache-Control",
	"Content-Length", "Content-Type", "Cookie", "Forwarded", "Host", "If-None-Match", "Proxy-Authorization",
	"Sec-Websocket-Key", "Traceparent", "Transfer-Encoding", "Upgrade", "User-Agent", "Via", "X-Forwarded-For",
	"X-Forwarded-Proto", "X-Request-Id"}

// validateInbound checks the flags of "stsproxy inbound".
func validateInbound(raw map[string]*rawValue, c *config) (*inboundConfig, error) {
	ic := &inboundConfig{}
	get := func(name string) (flagSpec, string) { return raw[name].spec, raw[name].last() }
	var err error

	s, v := get("upstream")
	if v == "" {
		return nil, &usageError{msg: "missing --upstream/UPSTREAM: name the service to forward verified requests to, such as http://127.0.0.1:8080"}
	}
	u, err := url.Parse(v)
	switch {
	case err != nil || u.Host == "" || u.Opaque != "":
		return nil, invalid(s, v, "want an absolute http or https URL, such as http://127.0.0.1:8080")
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, invalid(s, v, "want an http or https URL")
	case u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return nil, invalid(s, v, "want a URL without user info, query or fragment")
	}
	host, _, err := stsauth.ParseHostPort(u.Host)
	if err != nil {
		return nil, invalid(s, v, "want host[:port] in the URL: %v", err)
	}
	if stsauth.IsMetadataHost(host) {
		return nil, invalid(s, v, "want a host other than a link-local or instance metadata address")
	}
	ic.upstream = u

	insecureSpec, insecure := get("allow-insecure-issuer")
	if ic.verify.AllowInsecureLoopbackIssuers, err = strconv.ParseBool(insecure); err != nil {
		return nil, invalid(insecureSpec, insecure, "want true or false")
	}
	s, v = get("forward-token")
	if ic.forwardToken, err = strconv.ParseBool(v); err != nil {
		return nil, invalid(s, v, "want true or false")
	}
	s, v = get("validate")
	if ic.validateOnly, err = strconv.ParseBool(v); err != nil {
		return nil, invalid(s, v, "want true or false")
	}

	rv := raw["issuer"]
	if !rv.set() {
		return nil, &usageError{msg: "missing --issuer/ISSUER: name each trusted issuer, https://<id>.tokens.sts.global.api.aws (aws iam get-outbound-web-identity-federation-info shows it)"}
	}
	for _, iss := range rv.vals {
		iu, err := url.Parse(iss)
		switch {
		case err != nil || iu.Host == "" || iu.User != nil || iu.RawQuery != "" || iu.Fragment != "" || iu.ForceQuery:
			return nil, invalid(rv.spec, iss, "want an https URL without user info, query or fragment, exactly as the iss claim")
		case strings.HasSuffix(iss, "/"):
			return nil, invalid(rv.spec, iss, "want the URL without a trailing slash, exactly as the iss claim")
		case iu.Scheme == "https":
		case iu.Scheme == "http" && stsauth.IsLoopbackHost(iu.Hostname()):
			if !ic.verify.AllowInsecureLoopbackIssuers {
				return nil, invalid(rv.spec, iss, "want https; an http issuer on a loopback host needs --allow-insecure-issuer/ALLOW_INSECURE_ISSUER")
			}
		default:
			return nil, invalid(rv.spec, iss, "want an https URL (http only on a loopback host, with --allow-insecure-issuer)")
		}
		if slices.ContainsFunc(ic.verify.Issuers, func(is verify.Issuer) bool { return is.URL == iss }) {
			return nil, invalid(rv.spec, rv.String(), "want each issuer once")
		}
		ic.verify.Issuers = append(ic.verify.Issuers, verify.Issuer{URL: iss})
	}

	rv = raw["audience"]
	if !rv.set() {
		return nil, &usageError{msg: "missing --audience/AUDIENCE: name the audiences this service accepts, such as https://api.example.com"}
	}
	for _, a := range rv.vals {
		if a == "" || strings.TrimSpace(a) != a {
			return nil, invalid(rv.spec, rv.String(), "want non-empty audience values without surrounding white space")
		}
	}
	ic.verify.Audiences = rv.vals

	if rv = raw["account"]; rv.set() {
		for _, a := range rv.vals {
			if len(a) != 12 || strings.Trim(a, "0123456789") != "" {
				return nil, invalid(rv.spec, a, "want a 12-digit AWS account ID")
			}
		}
		// An issuer belongs to exactly one account, so one account per
		// issuer, in the same order, binds each; any other count is a
		// mistake rather than a choice.
		if len(rv.vals) != len(ic.verify.Issuers) {
			return nil, invalid(rv.spec, rv.String(), "want one account per --issuer/ISSUER (%d), in the same order: each binds its issuer", len(ic.verify.Issuers))
		}
		for i, a := range rv.vals {
			ic.verify.Issuers[i].Account = a
		}
		ic.verify.Policy.Accounts = rv.vals
	}
	if rv = raw["allow-org"]; rv.set() {
		for _, o := range rv.vals {
			if !strings.HasPrefix(o, "o-") || len(o) < 12 || strings.ContainsAny(o, " /,") {
				return nil, invalid(rv.spec, o, "want an AWS Organizations ID, o- and 10 to 32 characters")
			}
		}
		ic.verify.Policy.OrgIDs = rv.vals
	}
	if rv = raw["allow-ou-prefix"]; rv.set() {
		for _, p := range rv.vals {
			if !strings.HasPrefix(p, "o-") || !strings.Contains(p, "/") || strings.ContainsAny(p, " ,") {
				return nil, invalid(rv.spec, p, "want an OU path prefix such as o-a1b2c3d4e5/r-ab12/ou-ab12-11111111/")
			}
		}
		ic.verify.Policy.OUPathPrefixes = rv.vals
	}
	if rv = raw["allow-principal"]; rv.set() {
		for _, p := range rv.vals {
			if !strings.HasPrefix(p, "arn:") || strings.ContainsAny(p, " \t") {
				return nil, invalid(rv.spec, p, "want an ARN pattern starting with arn:, such as arn:aws:iam::123456789012:role/payments-*")
			}
		}
		ic.verify.Policy.Principals = rv.vals
	}
	if rv = raw["require-tag"]; rv.set() {
		if ic.verify.Policy.RequestTags, err = parseTags(rv); err != nil {
			return nil, err
		}
	}

	s, v = get("replay-cache-size")
	if ic.verify.ReplayCacheSize, err = strconv.Atoi(v); err != nil || ic.verify.ReplayCacheSize < 0 || ic.verify.ReplayCacheSize > maxReplayCacheSize {
		return nil, invalid(s, v, "want an integer from 0 (off) to %d", maxReplayCacheSize)
	}

	s, v = get("claim-header-prefix")
	if !validHeaderName(v) || !strings.HasSuffix(v, "-") || len(v) < 3 {
		return nil, invalid(s, v, "want a header name prefix of at least 3 characters ending in -, such as %s", defaultClaimHeaderPrefix)
	}
	prefix := textproto.CanonicalMIMEHeaderKey(v)
	for _, h := range protectedHeaders {
		if hasPrefixFold(h, prefix) {
			return nil, invalid(s, v, "want a prefix that no standard header starts with; it would remove %s", h)
		}
	}
	ic.headers = newClaimHeaders(prefix)

	// Anything else verify.New refuses (none is expected after the checks
	// above) is reported against --issuer, the flag that shapes it most.
	if _, err := verify.New(ic.verify); err != nil {
		return nil, invalid(raw["issuer"].spec, raw["issuer"].String(), "%v", err)
	}
	return ic, nil
}

// runInbound implements "stsproxy inbound".
func runInbound(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cfg, code := loadConfig(inboundCommand, args, getenv, stdout, stderr)
	if cfg == nil {
		return code
	}
	if cfg.inbound.validateOnly {
		fmt.Fprintf(stdout, "stsproxy inbound: configuration valid: upstream %s, %d issuer(s), %d audience(s)\n",
			cfg.inbound.upstream.Redacted(), len(cfg.inbound.verify.Issuers), len(cfg.inbound.verify.Audiences))
		return 0
	}
	log := newLogger(cfg, stderr)
	if err := serveInbound(ctx, cfg, log); err != nil {
		log.Error("stsproxy inbound failed", "error", err.Error())
		return 1
	}
	return 0
}

// serveInbound runs stsproxy inbound until ctx is done, on the server
// wiring the outbound proxy uses ([runServer]).
func serveInbound(ctx context.Context, cfg *config, log *slog.Logger) error {
	ic := cfg.inbound
	tel, pm, err := newServerTelemetry(cfg)
	if err != nil {
		return err
	}
	defer tel.shutdown(context.Background())
	im, err := newInboundMetrics(tel.provider)
	if err != nil {
		return err
	}
	keys := &http.Client{Transport: stsauth.NewGuardedTransport()}
	defer keys.CloseIdleConnections()
	vc := ic.verify
	vc.HTTPClient, vc.MeterProvider, vc.Logger, vc.Now = keys, tel.provider, log, ic.now
	v, err := verify.New(vc)
	if err != nil {
		return fmt.Errorf("stsproxy: inbound: %w", err)
	}
	base := newBaseTransport(cfg)
	defer base.CloseIdleConnections()
	in := newInbound(cfg, v, &instrumentedTransport{next: base, metrics: pm}, log, pm, im)
	if ic.upstream.Scheme == "http" && ic.forwardToken && !stsauth.IsLoopbackHost(ic.upstream.Hostname()) {
		log.Warn("--forward-token with an http upstream that is not a loopback address: tokens cross the network in clear text", "upstream", ic.upstream.Redacted())
	}
	mode := serverMode{
		handler:  in,
		upgrades: &in.upgrades,
		prime: func(ctx context.Context) bool {
			return retryUntil(ctx, log, "fetching issuer keys failed; retrying", func(ctx context.Context) error {
				if err := v.Prime(ctx); err != nil {
					return err
				}
				log.Info("issuer keys ready", "issuers", len(vc.Issuers))
				return nil
			})
		},
		ready:       v.Ready,
		listenAttrs: []any{"upstream", ic.upstream.Redacted(), "issuers", len(vc.Issuers)},
	}
	stopLog := in.asyncAccessLog(cfg, cfg.logOut)
	err = runServer(ctx, cfg, log, tel, mode)
	stopLog()
	log.Info("stopped")
	return err
}

// inbound is the handler of stsproxy inbound: it verifies each request's
// bearer token and forwards the request, with the verified identity as
// headers and every client-sent header of the claim prefix removed, or
// answers the refusal itself without reaching the upstream. It is safe for
// concurrent use.
type inbound struct {
	*forwarder
	verifier     *verify.Verifier
	upstream     *url.URL
	target       string // upstream host[:port], for logs and metrics
	headers      claimHeaders
	forwardToken bool
	metrics      *inboundMetrics
}

// newInbound returns the inbound handler, forwarding through rt.
func newInbound(cfg *config, v *verify.Verifier, rt http.RoundTripper, log *slog.Logger, pm *proxyMetrics, im *inboundMetrics) *inbound {
	ic := cfg.inbound
	in := &inbound{verifier: v, upstream: ic.upstream, target: ic.upstream.Host, headers: ic.headers,
		forwardToken: ic.forwardToken, metrics: im}
	in.forwarder = newForwarder(in.rewrite, rt, log, pm, cfg.accessLog)
	return in
}

// ServeHTTP verifies and forwards one request, and writes its access log
// record.
func (in *inbound) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	in.serve(w, r, in.verifyAndForward)
}

// verifyAndForward forwards r if its token verifies, else answers as
// [verify.WriteError] does: 401, 403 for a policy refusal, 503 when the
// issuer's keys are unavailable.
func (in *inbound) verifyAndForward(w http.ResponseWriter, r *http.Request, st *requestState) {
	st.target = in.target
	c, err := in.verifier.VerifyRequest(r)
	reason := verify.Reason(err)
	in.metrics.record(r.Context(), reason)
	if err != nil {
		st.auth = reason
		verify.WriteError(w, err)
		return
	}
	st.auth, st.principal, st.claims = "ok", c.AWS.PrincipalID, c
	in.forward(w, r, st)
}

// rewrite points the request at the upstream, removes every header of the
// claim prefix (and Authorization, unless --forward-token) and sets the
// verified identity headers. ReverseProxy has already removed hop-by-hop
// and X-Forwarded-* headers from pr.Out.
func (in *inbound) rewrite(pr *httputil.ProxyRequest) {
	st := stateFrom(pr.In.Context())
	pr.Out.Header["X-Forwarded-For"] = pr.In.Header["X-Forwarded-For"]
	pr.SetURL(in.upstream)
	pr.SetXForwarded()
	pr.Out.Host = pr.In.Host // the upstream sees the Host the client asked for
	removePrefixed(pr.Out.Header, in.headers.prefix)
	removePrefixed(pr.Out.Trailer, in.headers.prefix)
	if !in.forwardToken {
		delete(pr.Out.Header, "Authorization")
	}
	if st.claims != nil {
		in.headers.set(pr.Out.Header, st.claims)
	}
}

// removePrefixed deletes every field of h whose name starts with prefix,
// in any case.
func removePrefixed(h http.Header, prefix string) {
	for k := range h {
		if hasPrefixFold(k, prefix) {
			delete(h, k)
		}
	}
}

// hasPrefixFold reports whether s starts with prefix, ignoring ASCII case.
func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// claimHeaders are the names of the identity headers under one prefix, in
// canonical form, so setting them needs no canonicalization.
type claimHeaders struct {
	prefix      string // canonical, ending in "-"
	issuer      string
	account     string
	principalID string
	subject     string
	orgID       string
	ouPath      string
	region      string
	tokenID     string
	expiry      string
	requestTag  string
}

// newClaimHeaders returns the header names under prefix.
func newClaimHeaders(prefix string) claimHeaders {
	name := func(s string) string { return textproto.CanonicalMIMEHeaderKey(prefix + s) }
	return claimHeaders{
		prefix:      prefix,
		issuer:      name("Issuer"),
		account:     name("Account"),
		principalID: name("Principal-Id"),
		subject:     name("Subject"),
		orgID:       name("Org-Id"),
		ouPath:      name("Ou-Path"),
		region:      name("Source-Region"),
		tokenID:     name("Token-Id"),
		expiry:      name("Token-Expiry"),
		requestTag:  name("Request-Tag"),
	}
}

// set adds the identity of c to h: one field per claim, one field line per
// OU path and per request tag (key=value, sorted by key), every value
// encoded by [encodeHeaderValue]; a claim the token lacks gets no field.
func (n *claimHeaders) set(h http.Header, c *verify.Claims) {
	// One backing array for the single-valued fields: one allocation
	// instead of one per header.
	vals := make([]string, 0, 8)
	one := func(name, v string) {
		if v != "" {
			vals = append(vals, encodeHeaderValue(v))
			h[name] = vals[len(vals)-1 : len(vals) : len(vals)]
		}
	}
	one(n.issuer, c.Issuer)
	one(n.account, c.AWS.Account)
	one(n.principalID, c.AWS.PrincipalID)
	one(n.subject, c.Subject)
	one(n.orgID, c.AWS.OrgID)
	one(n.region, c.AWS.SourceRegion)
	one(n.tokenID, c.ID)
	if !c.Expiry.IsZero() {
		one(n.expiry, c.Expiry.UTC().Format(time.RFC3339))
	}
	if len(c.AWS.OUPath) > 0 {
		paths := make([]string, 0, len(c.AWS.OUPath))
		for _, p := range c.AWS.OUPath {
			paths = append(paths, encodeHeaderValue(p))
		}
		h[n.ouPath] = paths
	}
	if len(c.AWS.RequestTags) > 0 {
		keys := make([]string, 0, len(c.AWS.RequestTags))
		for k := range c.AWS.RequestTags {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		tags := make([]string, 0, len(keys))
		for _, k := range keys {
			tags = append(tags, encodeHeaderValue(k)+"="+encodeHeaderValue(c.AWS.RequestTags[k]))
		}
		h[n.requestTag] = tags
	}
}

// encodeHeaderValue percent-encodes s for a header value: every byte
// outside printable ASCII (0x21 to 0x7E), and '%', ',' and '=', becomes
// %XX (UTF-8, upper-case hex); everything else is kept. Any URL unescape
// (Go's url.PathUnescape, Python's urllib.parse.unquote, JavaScript's
// decodeURIComponent) restores the value. Commas are encoded so that field
// lines folded into one comma-separated list split back exactly; '=' so
// that a request tag's key=value splits at its first '='. A value that
// needs no encoding is returned as is, without allocating.
func encodeHeaderValue(s string) string {
	n := 0
	for i := 0; i < len(s); i++ {
		if headerByteNeedsEscape(s[i]) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, len(s)+2*n)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if headerByteNeedsEscape(c) {
			b = append(b, '%', hex[c>>4], hex[c&15])
			continue
		}
		b = append(b, c)
	}
	return string(b)
}

// headerByteNeedsEscape reports whether encodeHeaderValue encodes c.
func headerByteNeedsEscape(c byte) bool {
	return c <= 0x20 || c >= 0x7F || c == '%' || c == ',' || c == '='
}

// inboundMetrics are the instruments of stsproxy inbound beyond those it
// shares with the outbound proxy (request duration, in-flight requests, and
// the upstream latency as http.client.request.duration) and those of
// package verify (verifications by result, key fetches by issuer and
// result).
//
//   - stsproxy.inbound.requests {result, reason}: requests by result,
//     "allowed" (forwarded) or "refused", and reason class, "none" or one of
//     [verify.Reason].
type inboundMetrics struct {
	requests metric.Int64Counter
	// Options by reason class, read-only after construction; slices, so
	// that Add allocates no variadic slice per request.
	byReason map[string][]metric.AddOption
	other    []metric.AddOption // a reason class not in byReason
}

// inboundReasons are the reason classes verify reports, for the
// precomputed attribute sets.
var inboundReasons = []string{"no_token", "malformed", "algorithm", "untrusted_issuer", "unknown_key", "keys_unavailable",
	"bad_signature", "expired", "not_yet_valid", "lifetime", "audience", "account", "policy", "replay", "error"}

// newInboundMetrics creates the instruments on mp.
func newInboundMetrics(mp metric.MeterProvider) (*inboundMetrics, error) {
	m := mp.Meter(meterName, metric.WithInstrumentationVersion(versionString()))
	c, err := m.Int64Counter("stsproxy.inbound.requests", metric.WithUnit("{request}"),
		metric.WithDescription("Requests stsproxy inbound handled, by result (allowed or refused) and reason class."))
	if err != nil {
		return nil, fmt.Errorf("stsproxy: create instruments: %w", err)
	}
	attrs := func(result, reason string) []metric.AddOption {
		return []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(attribute.String("result", result), attribute.String("reason", reason)))}
	}
	im := &inboundMetrics{requests: c, byReason: map[string][]metric.AddOption{"": attrs("allowed", "none")}, other: attrs("refused", "error")}
	for _, r := range inboundReasons {
		im.byReason[r] = attrs("refused", r)
	}
	return im, nil
}

// record counts one request of the reason class ("" when allowed).
func (m *inboundMetrics) record(ctx context.Context, reason string) {
	opt, ok := m.byReason[reason]
	if !ok {
		opt = m.other
	}
	m.requests.Add(ctx, 1, opt...)
}
