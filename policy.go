package stsauth

import (
	"fmt"
	"slices"
	"time"
	"unicode/utf8"
)

// IAM actions and condition keys of outbound identity federation.
const (
	// ActionGetWebIdentityToken is the IAM action that mints tokens.
	ActionGetWebIdentityToken = "sts:GetWebIdentityToken"
	// ActionTagGetWebIdentityToken is the extra IAM action that lets a
	// GetWebIdentityToken call carry session tags.
	ActionTagGetWebIdentityToken = "sts:TagGetWebIdentityToken"
)

// PolicyParams describes the GetWebIdentityToken calls a role must be allowed
// to make; [LeastPrivilegePolicy] turns it into an IAM policy. It is a plain
// value: the zero value means one RS256 token of [DefaultDuration] for any
// audience, without tags.
type PolicyParams struct {
	// Audiences are the exact audience values the role may request, across
	// every audience set it uses. They become a ForAllValues:StringEquals
	// condition on sts:IdentityTokenAudience (a multi-valued key: a plain
	// StringEquals would deny any call with several audiences).
	Audiences []string

	// AudiencePatterns are IAM wildcard patterns (* and ?) for audiences
	// decided at request time, such as "https://*.example.com". They get
	// their own statement with ForAllValues:StringLike, so a call is allowed
	// if its audiences all match Audiences or all match AudiencePatterns.
	//
	// If Audiences and AudiencePatterns are both empty, the policy does not
	// restrict audiences at all.
	AudiencePatterns []string

	// SigningAlgorithm is the only algorithm allowed, [RS256] or [ES384]. If
	// empty, [RS256] is used.
	SigningAlgorithm string

	// Duration is the longest token lifetime allowed, 60 s to 1 h, in whole
	// seconds; shorter requests stay allowed. If zero, [DefaultDuration] is
	// used.
	Duration time.Duration

	// TagKeys are the session tag keys the calls send. If any are given, the
	// policy also allows sts:TagGetWebIdentityToken, restricted to exactly
	// these keys with ForAllValues:StringEquals on aws:TagKeys.
	TagKeys []string
}

// PolicyDocument is an IAM identity-based policy document. Marshal it with
// encoding/json; the output is deterministic.
type PolicyDocument struct {
	// Version is the policy language version, "2012-10-17".
	Version string `json:"Version"`
	// Statement lists the statements, all of effect Allow.
	Statement []PolicyStatement `json:"Statement"`
}

// PolicyStatement is one statement of a [PolicyDocument].
type PolicyStatement struct {
	// Sid names the statement.
	Sid string `json:"Sid,omitempty"`
	// Effect is "Allow".
	Effect string `json:"Effect"`
	// Action is the one IAM action allowed.
	Action string `json:"Action"`
	// Resource is "*": these actions have no resource type.
	Resource string `json:"Resource"`
	// Condition maps an operator ("NumericLessThanEquals") to condition
	// keys and their values. It is nil when there is no condition.
	Condition map[string]map[string]any `json:"Condition,omitempty"`
}

// LeastPrivilegePolicy returns the narrowest IAM policy that allows the
// GetWebIdentityToken calls p describes: the signing algorithm is fixed with
// StringEquals on sts:SigningAlgorithm, the lifetime capped with
// NumericLessThanEquals on sts:DurationSeconds, audiences restricted as
// [PolicyParams.Audiences] and [PolicyParams.AudiencePatterns] say, and
// session tags, if any, allowed only with their keys. Values are sorted and
// deduplicated. It fails, naming the value, if p holds something STS would
// reject.
func LeastPrivilegePolicy(p PolicyParams) (PolicyDocument, error) {
	alg := p.SigningAlgorithm
	switch alg {
	case "":
		alg = RS256
	case RS256, ES384:
	default:
		return PolicyDocument{}, fmt.Errorf("stsauth: policy: signing algorithm %q, want %s or %s", alg, RS256, ES384)
	}
	d := p.Duration
	if d == 0 {
		d = DefaultDuration
	}
	if d < MinDuration || d > MaxDuration || d%time.Second != 0 {
		return PolicyDocument{}, fmt.Errorf("stsauth: policy: duration %v, want whole seconds from %v to %v", d, MinDuration, MaxDuration)
	}
	auds, err := policyValues("audience", p.Audiences, MaxAudienceLength)
	if err != nil {
		return PolicyDocument{}, err
	}
	patterns, err := policyValues("audience pattern", p.AudiencePatterns, MaxAudienceLength)
	if err != nil {
		return PolicyDocument{}, err
	}
	keys, err := policyValues("tag key", p.TagKeys, MaxTagKeyLength)
	if err != nil {
		return PolicyDocument{}, err
	}
	if len(keys) > MaxTags {
		return PolicyDocument{}, fmt.Errorf("stsauth: policy: %d tag keys, want at most %d", len(keys), MaxTags)
	}

	base := func(sid string) PolicyStatement {
		return PolicyStatement{
			Sid:      sid,
			Effect:   "Allow",
			Action:   ActionGetWebIdentityToken,
			Resource: "*",
			Condition: map[string]map[string]any{
				"StringEquals":          {"sts:SigningAlgorithm": alg},
				"NumericLessThanEquals": {"sts:DurationSeconds": int(d / time.Second)},
			},
		}
	}
	doc := PolicyDocument{Version: "2012-10-17"}
	if len(auds) > 0 || len(patterns) == 0 {
		st := base("GetWebIdentityToken")
		if len(auds) > 0 {
			st.Condition["ForAllValues:StringEquals"] = map[string]any{"sts:IdentityTokenAudience": auds}
		}
		doc.Statement = append(doc.Statement, st)
	}
	if len(patterns) > 0 {
		st := base("GetWebIdentityTokenForAudiencePatterns")
		st.Condition["ForAllValues:StringLike"] = map[string]any{"sts:IdentityTokenAudience": patterns}
		doc.Statement = append(doc.Statement, st)
	}
	if len(keys) > 0 {
		doc.Statement = append(doc.Statement, PolicyStatement{
			Sid:      "TagGetWebIdentityToken",
			Effect:   "Allow",
			Action:   ActionTagGetWebIdentityToken,
			Resource: "*",
			Condition: map[string]map[string]any{
				"ForAllValues:StringEquals": {"aws:TagKeys": keys},
			},
		})
	}
	return doc, nil
}

// policyValues returns vals sorted and deduplicated, or an error naming the
// first empty or over-long value.
func policyValues(what string, vals []string, maxLen int) ([]string, error) {
	out := slices.Clone(vals)
	for _, v := range out {
		if n := utf8.RuneCountInString(v); n == 0 || n > maxLen {
			return nil, fmt.Errorf("stsauth: policy: %s %q, want 1 to %d characters", what, v, maxLen)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}
