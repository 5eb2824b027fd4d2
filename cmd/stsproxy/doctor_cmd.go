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
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/stsauth/stsauth"
	"github.com/stsauth/stsauth/ststest"
	"github.com/stsauth/stsauth/verify"
)

// doctorCallTimeout bounds each of the doctor's network checks: one STS
// call, or the issuer's keys.
const doctorCallTimeout = 15 * time.Second

// doctorCommand is "stsproxy doctor". It takes every flag of the proxy, so
// it runs with the proxy's own arguments and environment, plus --json.
var doctorCommand = &command{
	name:     "stsproxy doctor",
	synopsis: "stsproxy doctor [--json] [proxy flags]",
	summary:  "check the setup a token needs, and print the fix for each failure",
	about: "Checks, with the proxy's own flags and environment, the region (and where it came from), the credentials, " +
		"the caller's identity, a token for each configured audience set, the issuer's discovery document and keys, and the " +
		"token as an API would verify it (package verify), and prints each check as PASS, FAIL with the fix, or SKIP. " +
		"It never prints a token. Off AWS it ends in about a second. " +
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

// failErr reports err as the failure of name, with stsauth.Explain's cause
// and, unless fix is given, its fix.
func (r *doctorReport) failErr(name string, err error, fix string) {
	x := stsauth.Explain(err)
	if fix == "" {
		fix = x.Fix
	}
	r.fail(name, x.Cause+" ("+err.Error()+")", fix)
}

func (r *doctorReport) skip(name, why string) {
	r.Checks = append(r.Checks, doctorCheck{Name: name, Status: statusSkip, Detail: why})
}

// doctorAWS is the AWS setup the doctor checks.
type doctorAWS struct {
	opts         sts.Options // region (maybe empty), credentials, endpoint
	regionSource string      // where the region came from, for people
	regionErr    error       // why there is no region, if there is none
	cleanup      func()
}

// doctorDeps is how the checks reach AWS and the issuer; tests replace it.
type doctorDeps struct {
	// aws returns the STS client options the proxy would use and where
	// their region came from; an error means the configuration could not
	// be loaded at all.
	aws func(ctx context.Context, cfg *config, getenv func(string) string) (doctorAWS, error)
	// httpClient fetches the issuer's discovery document and keys.
	httpClient *http.Client
	// now is the clock for expiry arithmetic.
	now func() time.Time
}

// defaultDoctorDeps loads the AWS configuration the way the proxy does, or
// starts the in-process emulator with --local-sts.
func defaultDoctorDeps() doctorDeps {
	return doctorDeps{
		aws: func(ctx context.Context, cfg *config, getenv func(string) string) (doctorAWS, error) {
			if cfg.localSTS {
				srv := ststest.NewServer()
				return doctorAWS{opts: srv.Client().Options(), regionSource: "the --local-sts emulator", cleanup: srv.Close}, nil
			}
			awsCfg, src, err := loadAWS(ctx, cfg)
			if err != nil && !errors.Is(err, stsauth.ErrNoRegion) {
				return doctorAWS{}, err
			}
			return doctorAWS{opts: sts.NewFromConfig(awsCfg).Options(), regionSource: regionSourceText(src, getenv), regionErr: err, cleanup: func() {}}, nil
		},
		httpClient: &http.Client{Transport: http.DefaultTransport},
		now:        time.Now,
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
	setup, err := deps.aws(ctx, cfg, getenv)
	if setup.cleanup != nil {
		defer setup.cleanup()
	}
	if err != nil {
		rep.fail("AWS configuration", "load AWS configuration: "+err.Error(),
			"fix the shared config or credentials file, or the AWS_PROFILE it names")
		return rep
	}
	opts := setup.opts
	if opts.Region != "" {
		rep.pass("region", fmt.Sprintf("%s (from %s)", opts.Region, setup.regionSource))
	} else {
		regionErr := setup.regionErr
		if regionErr == nil {
			regionErr = stsauth.ErrNoRegion
		}
		what, fix := noRegion(regionErr)
		rep.fail("region", what, fix+"; GetWebIdentityToken is served only by regional STS endpoints, not the global one")
	}

	creds, err := bounded(ctx, func(ctx context.Context) (aws.Credentials, error) { return probeCredentials(ctx, opts.Credentials) })
	if err != nil {
		rep.failErr("credentials", err, stsauth.Explain(err).Fix+", "+withoutAWS)
	} else {
		rep.pass("credentials", credentialsDetail(creds, deps.now()))
	}
	if opts.Region == "" || err != nil {
		rep.skip("caller identity", "needs a region and credentials")
		rep.skip("GetWebIdentityToken", "needs a region and credentials")
		return rep
	}
	opts.RetryMaxAttempts = 1 // report what STS says, at once
	client := sts.New(opts)

	ident, err := bounded(ctx, func(ctx context.Context) (*sts.GetCallerIdentityOutput, error) {
		return client.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	})
	var caller, account string
	if err != nil {
		rep.failErr("caller identity", err, "")
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
		checkToken(ctx, &rep, cfg, client, opts.Region, aud, account, caller, creds, deps)
	}
	return rep
}

// bounded runs f with ctx bounded by doctorCallTimeout: one network call.
func bounded[T any](ctx context.Context, f func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, doctorCallTimeout)
	defer cancel()
	return f(ctx)
}

// credentialsDetail says where the credentials came from and when they
// expire.
func credentialsDetail(creds aws.Credentials, now time.Time) string {
	src := creds.Source
	if src == "" {
		src = "unknown provider"
	}
	if !creds.CanExpire {
		return fmt.Sprintf("from %s; they do not expire", src)
	}
	left := creds.Expires.Sub(now).Round(time.Second)
	return fmt.Sprintf("from %s; they expire at %s (in %v)", src, creds.Expires.UTC().Format(time.RFC3339), left)
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
	if cfg.allowed != nil {
		sets, _ = cfg.allowed.Audiences(cfg.upstreamScheme) // exact hosts only: wildcards cannot be tested
	}
	if len(sets) == 0 {
		return nil, "no audience to test: the proxy derives audiences from each request's host, and --allowed-hosts names no exact host"
	}
	return sets, ""
}

// checkToken gets one token for aud exactly as the proxy does, through the
// library's token source built from the proxy's configuration, then has
// package verify fetch the issuer's keys and verify it as an API would.
func checkToken(ctx context.Context, rep *doctorReport, cfg *config, client *sts.Client, region string,
	aud stsauth.Audience, account, caller string, creds aws.Credentials, deps doctorDeps) {
	name := func(what string) string { return what + " " + aud.String() }
	ts, err := newTokenSource(cfg, client, noop.NewMeterProvider(), slog.New(slog.DiscardHandler))
	if err != nil {
		rep.fail(name("GetWebIdentityToken"), "create the token source: "+err.Error(),
			"check the --token-* flags against the limits in stsproxy --help")
		rep.skip(name("issuer keys"), "needs a token")
		rep.skip(name("token"), "needs a token")
		return
	}
	defer ts.Close()
	t, err := bounded(ctx, func(ctx context.Context) (stsauth.Token, error) { return ts.Token(ctx, aud) })
	if err != nil {
		rep.failErr(name("GetWebIdentityToken"), err, tokenFix(err, cfg, region, caller))
		rep.skip(name("issuer keys"), "needs a token")
		rep.skip(name("token"), "needs a token")
		return
	}
	tok := t.Value()
	tags := ""
	if len(cfg.tags) > 0 {
		tags = fmt.Sprintf(", tag keys %v", slices.Sorted(maps.Keys(cfg.tags)))
	}
	rep.pass(name("GetWebIdentityToken"), fmt.Sprintf("%s, %v%s: a token of %d bytes%s",
		cfg.signingAlg, t.Lifetime, tags, len(tok), shortenedNote(cfg.duration, t, creds)))

	v, u, ok := checkIssuerKeys(ctx, rep, name("issuer keys"), tok, account, aud, deps.httpClient)
	if !ok {
		rep.skip(name("token"), "needs the issuer's keys")
		return
	}
	c, err := bounded(ctx, func(ctx context.Context) (*verify.Claims, error) { return v.Verify(ctx, tok) })
	if err != nil {
		rep.fail(name("token"), err.Error(), verifyFix(err))
		return
	}
	detail := fmt.Sprintf("valid: iss %s, sub %s, aud %v, alg %s, kid %s, expires %s (lifetime %v), account %s",
		c.Issuer, c.Subject, c.Audience, u.Algorithm, u.KeyID, c.Expiry.UTC().Format(time.RFC3339), c.Expiry.Sub(c.IssuedAt), c.AWS.Account)
	if c.AWS.OrgID != "" {
		detail += ", org " + c.AWS.OrgID
	}
	if c.AWS.SourceRegion != "" {
		detail += ", region " + c.AWS.SourceRegion
	}
	if problems := tokenProblems(cfg, t, c, u, aud); len(problems) > 0 {
		rep.fail(name("token"), detail+"; but "+strings.Join(problems, "; "),
			"the token differs from the request: check that AWS_ENDPOINT_URL_STS, if set, points at AWS STS")
		return
	}
	rep.pass(name("token"), detail)
}

// tokenFix is the fix for a failed GetWebIdentityToken: stsauth.Explain's,
// with what the doctor knows beside it (the policy for these flags, the
// region, --local-sts).
func tokenFix(err error, cfg *config, region, caller string) string {
	x := stsauth.Explain(err)
	switch x.Code {
	case "AccessDenied", "AccessDeniedException":
		who := "the proxy's role"
		if caller != "" {
			who = "the role or user behind " + caller
		}
		return x.Fix + ". The policy for these flags (stsproxy policy prints it), to attach to " + who + ":\n" + policyFor(cfg)
	case "RegionDisabledException":
		return x.Fix + "; the proxy uses " + region
	case stsauth.CodeNoCredentials:
		return x.Fix + ", " + withoutAWS
	}
	return x.Fix
}

// shortenedNote explains, after the token's lifetime, why it is shorter
// than --token-duration, from the token's own account of it.
func shortenedNote(requested time.Duration, t stsauth.Token, creds aws.Credentials) string {
	switch t.Shortened {
	case stsauth.ShortenedToSession:
		expires := "soon"
		if creds.CanExpire {
			expires = "at " + creds.Expires.UTC().Format(time.RFC3339)
		}
		return fmt.Sprintf("; the credentials expire %s, before a --token-duration %v token would end, so the proxy asks for tokens that end a minute before them (%v now, shorter as they near expiry) and refreshes them more often: use credentials with a longer session (a role's maximum session duration)",
			expires, requested, t.Lifetime)
	case stsauth.ShortenedAfterRefusal:
		return fmt.Sprintf("; STS refused --token-duration %v because the credentials' session ends sooner, so the proxy gets %v tokens after a refused call, and refreshes them more often: use credentials with a longer session, or --token-duration %v",
			requested, t.Lifetime, t.Lifetime)
	}
	return ""
}

// tokenProblems compares the verified token with what was asked for.
func tokenProblems(cfg *config, t stsauth.Token, c *verify.Claims, u verify.Unverified, aud stsauth.Audience) []string {
	var problems []string
	if got := slices.Sorted(slices.Values(c.Audience)); !slices.Equal(got, aud.Values()) {
		problems = append(problems, fmt.Sprintf("aud %v is not the requested %v", got, aud.Values()))
	}
	if u.Algorithm != cfg.signingAlg {
		problems = append(problems, fmt.Sprintf("alg %s is not the requested %s", u.Algorithm, cfg.signingAlg))
	}
	if t.Shortened == stsauth.ShortenedBySTS {
		problems = append(problems, fmt.Sprintf("lifetime %v is shorter than asked for (--token-duration %v)", t.Lifetime, cfg.duration))
	}
	if d := c.Expiry.Sub(c.IssuedAt); d > cfg.duration+5*time.Second {
		problems = append(problems, fmt.Sprintf("lifetime %v is longer than --token-duration %v", d, cfg.duration))
	}
	if iss, err := url.Parse(c.Issuer); err == nil && !cfg.localSTS && !stsauth.IsLoopbackHost(iss.Hostname()) &&
		(iss.Scheme != "https" || !strings.HasSuffix(iss.Hostname(), verify.AWSIssuerHostSuffix)) {
		problems = append(problems, fmt.Sprintf("iss %s is not an AWS issuer https://<id>%s", c.Issuer, verify.AWSIssuerHostSuffix))
	}
	return problems
}

// reachIssuerFix is the fix for an issuer whose keys cannot be fetched.
const reachIssuerFix = "APIs that verify the tokens fetch the issuer's keys from <iss>/.well-known/openid-configuration and its jwks_uri: make sure they are reachable from them (and from here, to run this check); AWS serves them publicly once outbound identity federation is enabled"

// checkIssuerKeys reads the token's issuer, then has package verify fetch
// its discovery document and keys, as an API verifying the token would.
// It returns the verifier, bound to the caller's account when known.
func checkIssuerKeys(ctx context.Context, rep *doctorReport, name, tok, account string, aud stsauth.Audience, client *http.Client) (*verify.Verifier, verify.Unverified, bool) {
	u, err := verify.Inspect(tok)
	if err != nil {
		rep.fail(name, err.Error(), "APIs would refuse this token: check that AWS_ENDPOINT_URL_STS, if set, points at AWS STS")
		return nil, u, false
	}
	iss, _ := url.Parse(u.Issuer)
	v, err := verify.New(verify.Config{
		Issuers:                      []verify.Issuer{{URL: u.Issuer, Account: account}},
		Audiences:                    aud.Values(),
		AllowInsecureLoopbackIssuers: iss != nil && stsauth.IsLoopbackHost(iss.Hostname()),
		HTTPClient:                   client,
		MeterProvider:                noop.NewMeterProvider(),
		Logger:                       slog.New(slog.DiscardHandler),
	})
	if err != nil {
		rep.fail(name, fmt.Sprintf("cannot verify tokens from issuer %q: %v", u.Issuer, err),
			"verifiers need an https issuer URL: check that AWS_ENDPOINT_URL_STS, if set, points at AWS STS")
		return nil, u, false
	}
	if _, err := bounded(ctx, func(ctx context.Context) (struct{}, error) { return struct{}{}, v.Prime(ctx) }); err != nil {
		rep.fail(name, err.Error(), reachIssuerFix)
		return nil, u, false
	}
	rep.pass(name, fmt.Sprintf("%s publishes its discovery document and keys", u.Issuer))
	return v, u, true
}

// verifyFix is the fix for a token that package verify refuses.
func verifyFix(err error) string {
	switch {
	case errors.Is(err, verify.ErrSignature), errors.Is(err, verify.ErrUnknownKey):
		return "the token is not signed by a key its issuer publishes: it was altered, or did not come from this issuer"
	case errors.Is(err, verify.ErrKeysUnavailable):
		return reachIssuerFix
	case errors.Is(err, verify.ErrExpired), errors.Is(err, verify.ErrNotYetValid):
		return "this machine's clock is off: sync it with NTP (on EC2, the Amazon Time Sync Service at 169.254.169.123 or fd00:ec2::123)"
	case errors.Is(err, verify.ErrAccount):
		return "the token's aws_account is not the caller's account: check that AWS_ENDPOINT_URL_STS, if set, points at AWS STS"
	}
	return "the token would be refused by APIs that verify it"
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
