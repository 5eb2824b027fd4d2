package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"

	"github.com/stsauth/stsauth"
)

// policyCommand is "stsproxy policy". It takes every flag of the proxy, so it
// runs with the proxy's own arguments and environment.
var policyCommand = &command{
	name:     "stsproxy policy",
	synopsis: "stsproxy policy [proxy flags]",
	summary:  "print the least-privilege IAM policy for the proxy's flags",
	about: "Prints on stdout the least-privilege IAM policy for the role the proxy runs as, for the same flags and " +
		"environment as the proxy: sts:GetWebIdentityToken with the configured signing algorithm, at most the configured " +
		"duration, and the audiences the proxy can ask for (--token-audience, the pinned upstream's origin, or the origins " +
		"of --allowed-hosts). Stdout is only the JSON, for 'aws iam put-role-policy --policy-document file://...'; " +
		"notes on what the policy cannot restrict go to stderr.",
}

// runPolicy implements "stsproxy policy": it prints, on stdout, the
// least-privilege IAM policy for the role the proxy runs as, derived from the
// same flags and environment as the proxy. Notes on what the policy cannot
// restrict go to stderr, so stdout stays a valid policy document for
// "aws iam put-role-policy --policy-document file://...". It returns the exit
// code, like run.
func runPolicy(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cfg, code := loadConfig(policyCommand, args, getenv, stdout, stderr)
	if cfg == nil {
		return code
	}
	if cfg.version {
		fmt.Fprintln(stdout, "stsproxy", versionString())
		return 0
	}
	p, notes, err := policyParams(cfg)
	if err != nil {
		return policyCommand.fail(stderr, 1, "%v", err)
	}
	doc, err := stsauth.LeastPrivilegePolicy(p)
	if err != nil {
		return policyCommand.fail(stderr, 1, "%v", err)
	}
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return policyCommand.fail(stderr, 1, "%v", err)
	}
	if _, err := fmt.Fprintf(stdout, "%s\n", out); err != nil {
		return policyCommand.fail(stderr, 1, "%v", err)
	}
	for _, n := range notes {
		fmt.Fprintf(stderr, "note: %s\n", n)
	}
	return 0
}

// policyParams derives what the proxy's role must be allowed to do from its
// configuration, with notes for what the policy cannot pin down:
//   - --token-audience: exactly those audiences;
//   - no audience but --upstream-host: the one origin every request gets;
//   - no audience, header routing and --allowed-hosts: the origins of the
//     allowed hosts, wildcards kept, matched with StringLike;
//   - otherwise any audience, with a note saying so.
func policyParams(cfg *config) (stsauth.PolicyParams, []string, error) {
	p := stsauth.PolicyParams{
		SigningAlgorithm: cfg.signingAlg,
		Duration:         cfg.duration,
		TagKeys:          slices.Sorted(maps.Keys(cfg.tags)),
	}
	var notes []string
	switch {
	case !cfg.audience.IsZero():
		p.Audiences = cfg.audience.Values()
	case cfg.upstreamHost != "":
		aud, err := stsauth.OriginAudience(cfg.upstreamScheme, cfg.upstreamHost)
		if err != nil {
			return p, nil, err
		}
		p.Audiences = aud.Values()
		notes = append(notes, fmt.Sprintf("no --token-audience: every token is for the pinned upstream's origin %s", p.Audiences[0]))
	case cfg.allowed != nil:
		// The origins HostAudience derives for the allowed hosts; a
		// wildcard "*.suffix" stays one, for StringLike.
		_, p.AudiencePatterns = cfg.allowed.Audiences(cfg.upstreamScheme)
		notes = append(notes, "audiences are dynamic (derived from each request's upstream host): the policy allows the origins of --allowed-hosts")
	default:
		notes = append(notes, "audiences are dynamic (derived from each request's upstream host) and there is no --allowed-hosts: the policy cannot restrict sts:IdentityTokenAudience; set --token-audience, --upstream-host or --allowed-hosts to narrow it")
	}
	if len(p.TagKeys) > 0 {
		notes = append(notes, "tag values are not pinned: aws:TagKeys allows these keys with any value")
	}
	return p, notes, nil
}
