package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/stsauth/stsauth"
	"github.com/stsauth/stsauth/ststest"
	"github.com/stsauth/stsauth/verify"
)

// Bounds of the doctor's network checks.
const (
	doctorCallTimeout  = 15 * time.Second // one STS call or document fetch
	doctorMaxDocument  = 1 << 20          // discovery document or JWKS, bytes
	doctorLifetimeSlop = 5 * time.Second  // exp - iat against --token-duration
	awsIssuerSuffix    = ".tokens.sts.global.api.aws"
)

// doctorCommand is "stsproxy doctor". It takes every flag of the proxy, so
// it runs with the proxy's own arguments and environment, plus --json.
var doctorCommand = &command{
	name:     "stsproxy doctor",
	synopsis: "stsproxy doctor [--json] [proxy flags]",
	summary:  "check the setup a token needs, and print the fix for each failure",
	about: "Checks, with the proxy's own flags and environment, the region, the credentials, the caller's identity, " +
		"a token for each configured audience set, its claims, the issuer's discovery document and keys, and the token's " +
		"signature, and prints each check as PASS, FAIL with the fix, or SKIP. It never prints a token. " +
		"With --local-sts every check runs against an emulator. Exit status 0 only if every check passed.",
	own: []flagSpec{{name: "json", kind: kindBool, def: "false", noEnv: true, usage: "print the report as JSON"}},
}

// Check results.
const (
	statusPass = "pass"
	statusFail = "fail"
	statusSkip = "skip" // not run because an earlier check failed
)

// doctorCheck is one check's result. Detail and Fix never hold a token.
type doctorCheck struct {
	Name   string `json:"name"`
	Status string `json:"status"`
	Detail string `json:"detail,omitempty"`
	Fix    string `json:"fix,omitempty"`
}

// doctorReport is what stsproxy doctor prints.
type doctorReport struct {
	Passed bool          `json:"passed"`
	Checks []doctorCheck `json:"checks"`
}

func (r *doctorReport) pass(name, detail string) {
	r.Checks = append(r.Checks, doctorCheck{Name: name, Status: statusPass, Detail: detail})
}

func (r *doctorReport) fail(name, detail, fix string) {
	r.Checks = append(r.Checks, doctorCheck{Name: name, Status: statusFail, Detail: detail, Fix: fix})
}

func (r *doctorReport) skip(name, why string) {
	r.Checks = append(r.Checks, doctorCheck{Name: name, Status: statusSkip, Detail: why})
}

// doctorDeps is how the checks reach AWS and the issuer; tests replace it.
type doctorDeps struct {
	// stsOptions returns the STS client options the proxy would use:
	// region, credentials, endpoint. The caller calls cleanup.
	stsOptions func(ctx context.Context, cfg *config) (opts sts.Options, cleanup func(), err error)
	// httpClient fetches the issuer's discovery document and keys.
	httpClient *http.Client
	// now is the clock for expiry arithmetic.
	now func() time.Time
}

// defaultDoctorDeps loads the AWS configuration the way the proxy does, or
// starts the in-process emulator with --local-sts.
func defaultDoctorDeps() doctorDeps {
	return doctorDeps{
		stsOptions: func(ctx context.Context, cfg *config) (sts.Options, func(), error) {
			if cfg.localSTS {
				srv := ststest.NewServer()
				return srv.Client().Options(), srv.Close, nil
			}
			awsCfg, err := awsconfig.LoadDefaultConfig(ctx)
			if err != nil {
				return sts.Options{}, func() {}, err
			}
			return sts.NewFromConfig(awsCfg).Options(), func() {}, nil
		},
		httpClient: &http.Client{
			Transport:     http.DefaultTransport,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		now: time.Now,
	}
}

// runDoctor implements "stsproxy doctor": it checks, with the proxy's own
// configuration, everything a token needs, and prints each check as passed
// or failed with the fix. It exits 0 only if every check passed, 1 if one
// failed, 2 for bad configuration.
func runDoctor(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	return runDoctorWith(ctx, args, getenv, stdout, stderr, defaultDoctorDeps())
}

// runDoctorWith is runDoctor with its dependencies passed in.
func runDoctorWith(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, deps doctorDeps) int {
	cfg, code := loadConfig(doctorCommand, args, getenv, stdout, stderr)
	if cfg == nil {
		return code
	}
	asJSON := cfg.flagBool("json")
	if cfg.version {
		fmt.Fprintln(stdout, "stsproxy", versionString())
		return 0
	}
	rep := diagnose(ctx, cfg, getenv, deps)
	rep.Passed = len(rep.Checks) > 0 && !slices.ContainsFunc(rep.Checks, func(c doctorCheck) bool { return c.Status != statusPass })
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return doctorCommand.fail(stderr, 1, "%v", err)
		}
	} else {
		writeReport(stdout, rep)
	}
	if !rep.Passed {
		return 1
	}
	return 0
}

// writeReport prints the report for people: one line a check, the fix
// indented under a failure, and a summary.
func writeReport(w io.Writer, rep doctorReport) {
	failed := 0
	for _, c := range rep.Checks {
		label := map[string]string{statusPass: "PASS", statusFail: "FAIL", statusSkip: "SKIP"}[c.Status]
		fmt.Fprintf(w, "%s  %s", label, c.Name)
		if c.Detail != "" {
			fmt.Fprintf(w, ": %s", c.Detail)
		}
		fmt.Fprintln(w)
		if c.Fix != "" {
			for line := range strings.Lines("fix: " + c.Fix) {
				fmt.Fprintf(w, "      %s", line)
			}
			if !strings.HasSuffix(c.Fix, "\n") {
				fmt.Fprintln(w)
			}
		}
		if c.Status == statusFail {
			failed++
		}
	}
	if rep.Passed {
		fmt.Fprintf(w, "\nall %d checks passed\n", len(rep.Checks))
		return
	}
	fmt.Fprintf(w, "\n%d of %d checks failed\n", failed, len(rep.Checks))
}

// diagnose runs the checks in order; a check that needs what an earlier one
// failed to provide is skipped.
func diagnose(ctx context.Context, cfg *config, getenv func(string) string, deps doctorDeps) doctorReport {
	var rep doctorReport

	opts, cleanup, err := deps.stsOptions(ctx, cfg)
	if cleanup != nil {
		defer cleanup()
	}
	regionOK := false
	switch {
	case err != nil:
		rep.fail("region", "load AWS configuration: "+err.Error(),
			"fix the shared config or credentials file, or the AWS_PROFILE it names")
	case opts.Region == "":
		rep.fail("region", "no AWS Region configured",
			"set AWS_REGION (for example AWS_REGION=us-east-1) or a region in the profile: GetWebIdentityToken is served only by regional STS endpoints, not the global one")
	default:
		src := "AWS configuration"
		switch {
		case cfg.localSTS:
			src = "--local-sts emulator"
		case getenv("AWS_REGION") != "":
			src = "AWS_REGION"
		}
		rep.pass("region", fmt.Sprintf("%s (from %s)", opts.Region, src))
		regionOK = true
	}
	if err != nil {
		rep.skip("credentials", "needs the AWS configuration")
		return rep
	}

	creds, credsOK := checkCredentials(ctx, &rep, opts, deps.now())
	if !regionOK || !credsOK {
		rep.skip("caller identity", "needs a region and credentials")
		rep.skip("GetWebIdentityToken", "needs a region and credentials")
		return rep
	}
	opts.RetryMaxAttempts = 1 // report what STS says, at once
	client := sts.New(opts)

	ident, identErr := bounded(ctx, func(ctx context.Context) (*sts.GetCallerIdentityOutput, error) {
		return client.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	})
	var caller, account string
	if identErr != nil {
		detail, fix := stsFix(identErr, cfg, opts, "", creds)
		rep.fail("caller identity", detail, fix)
	} else {
		caller, account = aws.ToString(ident.Arn), aws.ToString(ident.Account)
		rep.pass("caller identity", fmt.Sprintf("%s (account %s)", caller, account))
	}

	sets, why := doctorAudienceSets(cfg)
	if len(sets) == 0 {
		rep.fail("GetWebIdentityToken", why,
			"run doctor with --token-audience set to the audience an upstream expects, for example --token-audience https://api.example.com")
		return rep
	}
	for _, aud := range sets {
		checkToken(ctx, &rep, cfg, client, opts, aud, account, caller, creds, deps)
	}
	return rep
}

// bounded runs f with ctx bounded by doctorCallTimeout: one network call.
func bounded[T any](ctx context.Context, f func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, doctorCallTimeout)
	defer cancel()
	return f(ctx)
}

// checkCredentials retrieves the credentials and reports their source and
// expiry.
func checkCredentials(ctx context.Context, rep *doctorReport, opts sts.Options, now time.Time) (aws.Credentials, bool) {
	const fix = "give the proxy AWS credentials: on EKS, EKS Pod Identity or IRSA for its service account; on ECS, a task role; on EC2, an instance profile; elsewhere AWS_PROFILE or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
	if opts.Credentials == nil {
		rep.fail("credentials", "no credentials provider", fix)
		return aws.Credentials{}, false
	}
	creds, err := bounded(ctx, opts.Credentials.Retrieve)
	if err != nil {
		rep.fail("credentials", "no credentials found: "+err.Error(), fix)
		return aws.Credentials{}, false
	}
	src := creds.Source
	if src == "" {
		src = "unknown provider"
	}
	if !creds.CanExpire {
		rep.pass("credentials", fmt.Sprintf("from %s; they do not expire", src))
		return creds, true
	}
	left := creds.Expires.Sub(now).Round(time.Second)
	rep.pass("credentials", fmt.Sprintf("from %s; they expire at %s (in %v)", src, creds.Expires.UTC().Format(time.RFC3339), left))
	return creds, true
}

// doctorAudienceSets returns the audience sets to ask tokens for: the
// static set, the pinned upstream's origin, or each exact --allowed-hosts
// origin. Wildcards cannot be tested; with nothing to test it says why.
func doctorAudienceSets(cfg *config) ([]stsauth.Audience, string) {
	switch {
	case !cfg.audience.IsZero():
		return []stsauth.Audience{cfg.audience}, ""
	case cfg.upstreamHost != "":
		if a, err := stsauth.OriginAudience(cfg.upstreamScheme, cfg.upstreamHost); err == nil {
			return []stsauth.Audience{a}, ""
		}
	}
	var sets []stsauth.Audience
	seen := map[string]bool{}
	for _, h := range cfg.allowedHosts {
		if strings.Contains(h, "*") { // "*.suffix", or "*" for any host
			continue
		}
		a, err := stsauth.OriginAudience(cfg.upstreamScheme, h)
		if err != nil || seen[a.String()] {
			continue
		}
		seen[a.String()] = true
		sets = append(sets, a)
	}
	if len(sets) == 0 {
		return nil, "no audience to test: the proxy derives audiences from each request's host, and --allowed-hosts names no exact host"
	}
	return sets, ""
}

// checkToken gets one token for aud exactly as the proxy does, through the
// library's token source built from the proxy's configuration (response
// cap, token checks, duration fitted to the credentials, halving on
// SessionDurationEscalationException), and checks its claims, the issuer's
// discovery document and keys, and its signature.
func checkToken(ctx context.Context, rep *doctorReport, cfg *config, client *sts.Client, opts sts.Options,
	aud stsauth.Audience, account, caller string, creds aws.Credentials, deps doctorDeps) {
	name := func(what string) string { return what + " " + aud.String() }
	skipRest := func(why string) {
		for _, s := range []string{"token claims", "issuer discovery", "issuer keys", "token signature"} {
			rep.skip(name(s), why)
		}
	}
	watch := &escalationWatch{}
	ts, err := newTokenSource(cfg, client, noop.NewMeterProvider(), slog.New(watch))
	if err != nil {
		rep.fail(name("GetWebIdentityToken"), "create the token source: "+err.Error(),
			"check the --token-* flags against the limits in stsproxy --help")
		skipRest("needs a token")
		return
	}
	defer ts.Close()
	t, err := bounded(ctx, func(ctx context.Context) (stsauth.Token, error) { return ts.Token(ctx, aud) })
	if err != nil {
		detail, fix := stsFix(err, cfg, opts, caller, creds)
		rep.fail(name("GetWebIdentityToken"), detail, fix)
		skipRest("needs a token")
		return
	}
	tok := t.Value()
	dec, decErr := decodeToken(tok)
	lifetime, note, problem := "", "", ""
	if decErr == nil {
		lifetime = ", " + dec.lifetime().String()
		note, problem = explainLifetime(cfg.duration, dec, creds, watch.seen.Load())
	}
	tags := ""
	if len(cfg.tags) > 0 {
		tags = fmt.Sprintf(", tag keys %v", slices.Sorted(maps.Keys(cfg.tags)))
	}
	rep.pass(name("GetWebIdentityToken"), fmt.Sprintf("%s%s%s: a token of %d bytes%s", cfg.signingAlg, lifetime, tags, len(tok), note))

	if !checkClaims(rep, name("token claims"), cfg, dec, decErr, problem, aud, account) {
		rep.skip(name("issuer discovery"), "needs the token's issuer")
		rep.skip(name("issuer keys"), "needs the token's issuer")
		rep.skip(name("token signature"), "needs the token's issuer")
		return
	}
	iss := dec.std.Issuer
	jwksURI, ok := checkDiscovery(ctx, rep, name("issuer discovery"), iss, deps.httpClient)
	if ok {
		checkKeys(ctx, rep, name("issuer keys"), jwksURI, dec.kid, deps.httpClient)
	} else {
		rep.skip(name("issuer keys"), "needs the discovery document")
	}
	checkSignature(ctx, rep, name("token signature"), tok, iss, account, aud, deps.httpClient)
}

// escalationWarning is part of the message of the library's one warning
// that STS refused the token duration and it asks for shorter tokens.
const escalationWarning = "asking for shorter tokens"

// escalationWatch is the slog handler of the doctor's token source: it
// drops every record, noting whether the library warned that it asks for
// shorter tokens after a refused call.
type escalationWatch struct{ seen atomic.Bool }

func (w *escalationWatch) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

func (w *escalationWatch) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, escalationWarning) {
		w.seen.Store(true)
	}
	return nil
}

func (w *escalationWatch) WithAttrs([]slog.Attr) slog.Handler { return w }
func (w *escalationWatch) WithGroup(string) slog.Handler      { return w }

// doctorSessionSlop is how much longer than a token the credentials may
// live and still be why it is short: the library ends a token a minute
// before the credentials expire, plus the clocks' disagreement.
const doctorSessionSlop = time.Minute + doctorLifetimeSlop

// explainLifetime compares the token's lifetime (exp − iat) with the
// requested duration. A shorter token is explained, in note, by the
// credentials expiring first (the library fits the duration to them) or by
// a call STS refused (refused: the library halved the duration); otherwise,
// or when it is longer, problem says how it differs.
func explainLifetime(requested time.Duration, dec decodedToken, creds aws.Credentials, refused bool) (note, problem string) {
	d := dec.lifetime()
	switch {
	case d > requested+doctorLifetimeSlop:
		return "", fmt.Sprintf("lifetime %v is longer than the requested %v", d, requested)
	case d >= requested-doctorLifetimeSlop:
		return "", ""
	case refused:
		return fmt.Sprintf("; STS refused --token-duration %v because the credentials' session ends sooner, so the proxy gets %v tokens after a refused call, and refreshes them more often: use credentials with a longer session, or --token-duration %v",
			requested, d, d), ""
	case creds.CanExpire && creds.Expires.Before(dec.iat().Add(requested+doctorSessionSlop)) && !dec.exp().After(creds.Expires.Add(doctorLifetimeSlop)):
		return fmt.Sprintf("; the credentials expire at %s, before a --token-duration %v token would end, so the proxy asks for tokens that end a minute before them (%v now, shorter as they near expiry) and refreshes them more often: use credentials with a longer session (a role's maximum session duration)",
			creds.Expires.UTC().Format(time.RFC3339), requested, d), ""
	default:
		return "", fmt.Sprintf("lifetime %v is shorter than the requested %v", d, requested)
	}
}

// stsAWSClaims are the AWS claims the doctor shows.
type stsAWSClaims struct {
	Account      string `json:"aws_account"`
	OrgID        string `json:"org_id"`
	SourceRegion string `json:"source_region"`
}

// decodedToken is a token's header and claims, decoded without checking
// the signature (the signature check comes later).
type decodedToken struct {
	std      jwt.Claims
	aws      stsAWSClaims
	alg, kid string
}

// iat returns the token's issued-at time, or the zero time.
func (d decodedToken) iat() time.Time {
	if d.std.IssuedAt == nil {
		return time.Time{}
	}
	return d.std.IssuedAt.Time()
}

// exp returns the token's expiry, or the zero time.
func (d decodedToken) exp() time.Time {
	if d.std.Expiry == nil {
		return time.Time{}
	}
	return d.std.Expiry.Time()
}

// lifetime is the token's lifetime by its own claims: exp − iat.
func (d decodedToken) lifetime() time.Duration { return d.exp().Sub(d.iat()) }

// decodeToken decodes tok's header and claims without trusting them. Its
// errors never quote the token.
func decodeToken(tok string) (decodedToken, error) {
	parsed, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.RS256, jose.ES384})
	if err != nil || len(parsed.Headers) != 1 {
		return decodedToken{}, errors.New("STS returned something that is not a signed JWT")
	}
	var d decodedToken
	var awsClaims struct {
		AWS stsAWSClaims `json:"https://sts.amazonaws.com/"`
	}
	if err := parsed.UnsafeClaimsWithoutVerification(&d.std, &awsClaims); err != nil {
		return decodedToken{}, fmt.Errorf("the token's claims do not decode: %w", err)
	}
	d.aws = awsClaims.AWS
	d.alg, d.kid = parsed.Headers[0].Algorithm, parsed.Headers[0].KeyID
	return d, nil
}

// checkClaims reports the token's claims (decoded into dec, or decErr) and
// compares them with the request; lifetimeProblem is how its lifetime
// differs from the request, if it does. It reports whether the claims
// name an issuer to check further.
func checkClaims(rep *doctorReport, name string, cfg *config, dec decodedToken, decErr error, lifetimeProblem string, aud stsauth.Audience, account string) bool {
	if decErr != nil {
		rep.fail(name, decErr.Error(), "report this: STS tokens are compact JWS with JSON claims")
		return false
	}
	std, a := dec.std, dec.aws
	detail := fmt.Sprintf("iss %s, sub %s, aud %v, alg %s, kid %s, expires %s (lifetime %v), account %s",
		std.Issuer, std.Subject, []string(std.Audience), dec.alg, dec.kid, dec.exp().UTC().Format(time.RFC3339), dec.lifetime(), a.Account)
	if a.OrgID != "" {
		detail += ", org " + a.OrgID
	}
	if a.SourceRegion != "" {
		detail += ", region " + a.SourceRegion
	}
	var problems []string
	got := slices.Sorted(slices.Values(std.Audience))
	if !slices.Equal(got, aud.Values()) {
		problems = append(problems, fmt.Sprintf("aud %v is not the requested %v", got, aud.Values()))
	}
	if dec.alg != cfg.signingAlg {
		problems = append(problems, fmt.Sprintf("alg %s is not the requested %s", dec.alg, cfg.signingAlg))
	}
	if lifetimeProblem != "" {
		problems = append(problems, lifetimeProblem)
	}
	if account != "" && a.Account != account {
		problems = append(problems, fmt.Sprintf("aws_account %q is not the caller's account %s", a.Account, account))
	}
	if u, err := url.Parse(std.Issuer); err != nil || u.Host == "" {
		problems = append(problems, fmt.Sprintf("iss %q is not a URL", std.Issuer))
	} else if !cfg.localSTS && !stsauth.IsLoopbackHost(u.Hostname()) && (u.Scheme != "https" || !strings.HasSuffix(u.Hostname(), awsIssuerSuffix)) {
		problems = append(problems, fmt.Sprintf("iss %s is not an AWS issuer https://<id>%s", std.Issuer, awsIssuerSuffix))
	}
	if len(problems) > 0 {
		rep.fail(name, detail+"; but "+strings.Join(problems, "; "),
			"the token differs from the request: check AWS_ENDPOINT_URL_STS points at AWS STS")
		return std.Issuer != ""
	}
	rep.pass(name, detail)
	return true
}

// fetchDocument GETs a JSON document of at most doctorMaxDocument bytes.
func fetchDocument(ctx context.Context, client *http.Client, u string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, doctorCallTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, doctorMaxDocument+1))
	if err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	if len(body) > doctorMaxDocument {
		return fmt.Errorf("GET %s: document larger than %d bytes", u, doctorMaxDocument)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("GET %s: not JSON: %w", u, err)
	}
	return nil
}

// reachIssuerFix is the fix for an issuer whose documents cannot be fetched.
const reachIssuerFix = "APIs that verify the tokens fetch the issuer's keys from this URL: make sure it is reachable from them (and from here, to run this check); AWS serves it publicly once outbound identity federation is enabled"

// checkDiscovery fetches the issuer's OpenID discovery document and returns
// its jwks_uri.
func checkDiscovery(ctx context.Context, rep *doctorReport, name string, iss string, client *http.Client) (string, bool) {
	u := strings.TrimSuffix(iss, "/") + "/.well-known/openid-configuration"
	var doc struct {
		Issuer  string   `json:"issuer"`
		JWKSURI string   `json:"jwks_uri"`
		Algs    []string `json:"id_token_signing_alg_values_supported"`
	}
	if err := fetchDocument(ctx, client, u, &doc); err != nil {
		rep.fail(name, err.Error(), reachIssuerFix)
		return "", false
	}
	var problems []string
	if doc.Issuer != iss {
		problems = append(problems, fmt.Sprintf("issuer %q is not the token's iss %q", doc.Issuer, iss))
	}
	ju, err := url.Parse(doc.JWKSURI)
	if iu, _ := url.Parse(iss); err != nil || doc.JWKSURI == "" || iu == nil || ju.Scheme != iu.Scheme || ju.Host != iu.Host {
		problems = append(problems, fmt.Sprintf("jwks_uri %q is not on the issuer's origin", doc.JWKSURI))
	}
	if len(problems) > 0 {
		rep.fail(name, u+": "+strings.Join(problems, "; "), "verifiers will refuse this issuer; check the issuer URL in the token")
		return "", false
	}
	rep.pass(name, fmt.Sprintf("%s: jwks_uri %s, algorithms %v", u, doc.JWKSURI, doc.Algs))
	return doc.JWKSURI, true
}

// checkKeys fetches the issuer's JWKS and looks for the token's key.
func checkKeys(ctx context.Context, rep *doctorReport, name, jwksURI, kid string, client *http.Client) {
	var set jose.JSONWebKeySet
	if err := fetchDocument(ctx, client, jwksURI, &set); err != nil {
		rep.fail(name, err.Error(), reachIssuerFix)
		return
	}
	var kids []string
	for _, k := range set.Keys {
		kids = append(kids, k.KeyID)
	}
	if len(set.Key(kid)) == 0 {
		rep.fail(name, fmt.Sprintf("%s publishes keys %v, not the token's %q", jwksURI, kids, kid),
			"the issuer has not published the signing key yet, or the token did not come from this issuer: retry in a minute")
		return
	}
	rep.pass(name, fmt.Sprintf("%s: %d keys %v, including the token's %s", jwksURI, len(set.Keys), kids, kid))
}

// checkSignature verifies the token as an API receiving it would, with the
// verify package: the issuer (bound to the caller's account), the audience,
// the times and the signature against the issuer's published keys.
func checkSignature(ctx context.Context, rep *doctorReport, name, tok, iss, account string, aud stsauth.Audience, client *http.Client) {
	u, _ := url.Parse(iss)
	v, err := verify.New(verify.Config{
		Issuers:                      []verify.Issuer{{URL: iss, Account: account}},
		Audiences:                    aud.Values(),
		AllowInsecureLoopbackIssuers: u != nil && stsauth.IsLoopbackHost(u.Hostname()),
		HTTPClient:                   client,
		MeterProvider:                noop.NewMeterProvider(),
		Logger:                       slog.New(slog.DiscardHandler),
	})
	if err != nil {
		rep.fail(name, "cannot verify tokens from this issuer: "+err.Error(), "verifiers need an https issuer URL; check AWS_ENDPOINT_URL_STS points at AWS STS")
		return
	}
	c, err := bounded(ctx, func(ctx context.Context) (*verify.Claims, error) { return v.Verify(ctx, tok) })
	if err != nil {
		fix := "the token would be refused by APIs that verify it"
		switch {
		case errors.Is(err, verify.ErrSignature), errors.Is(err, verify.ErrUnknownKey):
			fix = "the token is not signed by a key its issuer publishes: it was altered, or did not come from this issuer"
		case errors.Is(err, verify.ErrKeysUnavailable):
			fix = reachIssuerFix
		case errors.Is(err, verify.ErrExpired), errors.Is(err, verify.ErrNotYetValid):
			fix = "this machine's clock is off: sync it with NTP (on EC2, the Amazon Time Sync Service at 169.254.169.123 or fd00:ec2::123)"
		case errors.Is(err, verify.ErrAccount):
			fix = "the token's aws_account is not the caller's account: check AWS_ENDPOINT_URL_STS points at AWS STS"
		}
		rep.fail(name, err.Error(), fix)
		return
	}
	rep.pass(name, fmt.Sprintf("valid: signed by %s, for %v, account %s", c.Issuer, c.Audience, c.AWS.Account))
}

// stsFix maps an STS error, or the library's error wrapping one, to a
// detail line and its fix. caller is the caller's ARN if known, for the
// policy fix.
func stsFix(err error, cfg *config, opts sts.Options, caller string, creds aws.Credentials) (detail, fix string) {
	if errors.Is(err, stsauth.ErrCredentialsExpiring) {
		// Known up front from the credentials' expiry, or after STS refused
		// even the shortest token.
		return err.Error(), sessionTooShortFix(creds)
	}
	var apiErr smithy.APIError
	if !errors.As(err, &apiErr) {
		endpoint := "the regional STS endpoint (sts." + opts.Region + ".amazonaws.com)"
		if opts.BaseEndpoint != nil {
			endpoint = *opts.BaseEndpoint
		}
		var opErr *smithy.OperationError
		var deserErr *smithy.DeserializationError
		switch {
		case errors.Is(err, context.Canceled):
			return "interrupted before STS answered", "run stsproxy doctor again"
		case errors.Is(err, context.DeadlineExceeded):
			return "no answer from STS within " + doctorCallTimeout.String(), "check that " + endpoint + " is reachable: egress rules, a VPC endpoint for STS, or HTTPS_PROXY"
		case !errors.As(err, &opErr), errors.As(err, &deserErr):
			// The call returned, but not with a token the library takes:
			// it checked the answer after the SDK (no OperationError), or
			// the SDK could not read it.
			return err.Error(), "the proxy refuses what " + endpoint + " answered, and would answer 502 token unavailable: check that it is AWS STS (AWS_ENDPOINT_URL_STS), and that nothing between here and it rewrites responses"
		}
		return err.Error(), "check that " + endpoint + " is reachable: egress rules, a VPC endpoint for STS, or HTTPS_PROXY"
	}
	detail = apiErr.ErrorCode() + ": " + apiErr.ErrorMessage()
	switch apiErr.ErrorCode() {
	case "OutboundWebIdentityFederationDisabledException":
		fix = "enable outbound identity federation, once per account: aws iam enable-outbound-web-identity-federation; then aws iam get-outbound-web-identity-federation-info shows the issuer to register with the APIs you call"
	case "AccessDenied", "AccessDeniedException":
		who := "the proxy's role"
		if caller != "" {
			who = "the role or user behind " + caller
		}
		fix = "attach this identity policy to " + who + " (stsproxy policy prints it for the same flags):\n" + policyFor(cfg) +
			"\nIf it is attached, a service control policy, resource control policy, permissions boundary or VPC endpoint policy denies the call."
	case "SessionDurationEscalationException":
		fix = sessionTooShortFix(creds)
	case "JWTPayloadSizeExceededException":
		fix = "the token would be too large: send fewer or shorter --token-tag values, or fewer --token-audience values"
	case "RegionDisabledException":
		fix = fmt.Sprintf("STS is not enabled in %s for this account: activate the Region in the account settings (IAM console, Security Token Service regions), or set AWS_REGION to an enabled Region", opts.Region)
	case "Throttling", "ThrottlingException", "RequestLimitExceeded":
		fix = "STS throttled the call: retry later. The proxy calls STS once per audience set per refresh, not per request; if many replicas or tools share the account, spread them out"
	case "InvalidClientTokenId", "UnrecognizedClientException", "SignatureDoesNotMatch", "IncompleteSignature", "MissingAuthenticationToken":
		fix = "the credentials are not valid AWS credentials: check which ones the SDK found (see credentials above) and replace them"
	case "ExpiredToken", "ExpiredTokenException", "RequestExpired":
		fix = "the credentials have expired, or the clock is off: refresh them (aws sso login, or restart the pod to get fresh Pod Identity/IRSA credentials) and sync the clock"
	case "ValidationError":
		fix = "STS refused a parameter: check --token-audience, --token-duration and --token-tag against the limits in stsproxy --help"
	case "InternalFailure", "ServiceUnavailable", "InternalError":
		fix = "an error on the STS side: retry later"
	default:
		fix = "unexpected STS error: see the AWS STS GetWebIdentityToken reference for " + apiErr.ErrorCode()
	}
	return detail, fix
}

// sessionTooShortFix is the fix for credentials whose session ends before
// even a token of stsauth.MinDuration would.
func sessionTooShortFix(creds aws.Credentials) string {
	fix := fmt.Sprintf("the credentials' session ends before even a %v token would", stsauth.MinDuration)
	if creds.CanExpire {
		fix += fmt.Sprintf(" (they expire at %s)", creds.Expires.UTC().Format(time.RFC3339))
	}
	return fix + ": renew them, or use credentials with a longer session (a role's maximum session duration)"
}

// policyFor returns the least-privilege policy for cfg as indented JSON, or
// a pointer to stsproxy policy if it cannot be built.
func policyFor(cfg *config) string {
	p, _, err := policyParams(cfg)
	if err != nil {
		return "(run stsproxy policy: " + err.Error() + ")"
	}
	doc, err := stsauth.LeastPrivilegePolicy(p)
	if err != nil {
		return "(run stsproxy policy: " + err.Error() + ")"
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return "(run stsproxy policy)"
	}
	return string(b)
}
