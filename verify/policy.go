package verify

import (
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"
)

// Policy decides which principals may call, from the AWS claims of a token
// whose signature, issuer, audience and times already check out. Every
// non-empty rule must pass; an empty rule allows anything. The zero Policy
// allows every valid token.
//
// A Policy is read once by [New]; changing it afterwards has no effect.
type Policy struct {
	// Accounts lists the allowed aws_account values.
	Accounts []string
	// OrgIDs lists the allowed org_id values, such as "o-a1b2c3d4e5".
	OrgIDs []string
	// OUPathPrefixes lists allowed organizational unit path prefixes, such
	// as "o-a1b2c3d4e5/r-ab12/ou-ab12-11111111/". A token passes if one of
	// its ou_path entries starts with one of them. Prefixes match whole path
	// segments: "o-a/r-b/ou-b-1" does not match "o-a/r-b/ou-b-12/".
	OUPathPrefixes []string
	// Principals lists allowed principal ARN patterns, matched against
	// principal_id (or sub, if principal_id is absent) like IAM's
	// StringLike: "*" matches any run of characters, "?" any one, and
	// matching is case-sensitive. Example:
	// "arn:aws:iam::123456789012:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_Admin_*".
	Principals []string
	// RequestTags lists request tags the token must carry, each with
	// exactly this value. Request tags are chosen by the caller: whoever
	// asks STS for the token sets them (GetWebIdentityToken's Tags, any
	// value, given sts:TagGetWebIdentityToken). Use this rule for routing,
	// to keep apart the tokens well-behaved callers mint for different
	// purposes, never for authorization: it does not restrict who may
	// call. Authorize with Accounts, OrgIDs, OUPathPrefixes or Principals.
	RequestTags map[string]string
	// Check, if non-nil, runs last on the claims for any other rule. A
	// non-nil error refuses the token; [errors.Is] with [ErrPolicy] holds
	// for it, and its text is kept in the error's detail, so it must not
	// hold secrets. It runs on every request, cached token or not, and
	// must not modify the claims' slices and maps, which are shared (see
	// [Claims]).
	Check func(*Claims) error
}

// compiledPolicy is a Policy resolved by New.
type compiledPolicy struct {
	accounts    []string
	orgIDs      []string
	ouPrefixes  []string // each ending in "/"
	principals  []string
	requestTags map[string]string
	check       func(*Claims) error
}

// compilePolicy copies p so later changes have no effect and checks its
// patterns.
func compilePolicy(p Policy) (*compiledPolicy, error) {
	c := &compiledPolicy{
		accounts:   slices.Clone(p.Accounts),
		orgIDs:     slices.Clone(p.OrgIDs),
		principals: slices.Clone(p.Principals),
		check:      p.Check,
	}
	for _, pre := range p.OUPathPrefixes {
		if pre == "" {
			return nil, fmt.Errorf("verify: Policy.OUPathPrefixes has an empty prefix")
		}
		if !strings.HasSuffix(pre, "/") {
			pre += "/"
		}
		c.ouPrefixes = append(c.ouPrefixes, pre)
	}
	for _, pat := range p.Principals {
		if pat == "" {
			return nil, fmt.Errorf("verify: Policy.Principals has an empty pattern")
		}
	}
	if len(p.RequestTags) > 0 {
		c.requestTags = make(map[string]string, len(p.RequestTags))
		for k, v := range p.RequestTags {
			c.requestTags[k] = v
		}
	}
	return c, nil
}

// allow returns nil if c passes every rule, else an *Error of kind
// ErrPolicy naming the rule.
func (p *compiledPolicy) allow(c *Claims) error {
	a := &c.AWS
	if len(p.accounts) > 0 && !slices.Contains(p.accounts, a.Account) {
		return newError(ErrPolicy, fmt.Sprintf("account %q not allowed", a.Account), nil)
	}
	if len(p.orgIDs) > 0 && !slices.Contains(p.orgIDs, a.OrgID) {
		return newError(ErrPolicy, fmt.Sprintf("org_id %q not allowed", a.OrgID), nil)
	}
	if len(p.ouPrefixes) > 0 && !p.ouAllowed(a.OUPath) {
		return newError(ErrPolicy, "no ou_path under an allowed prefix", nil)
	}
	if len(p.principals) > 0 {
		principal := a.PrincipalID
		if principal == "" {
			principal = c.Subject
		}
		if !slices.ContainsFunc(p.principals, func(pat string) bool { return globMatch(pat, principal) }) {
			return newError(ErrPolicy, fmt.Sprintf("principal %q not allowed", principal), nil)
		}
	}
	for k, want := range p.requestTags {
		if got, ok := a.RequestTags[k]; !ok || got != want {
			return newError(ErrPolicy, fmt.Sprintf("request tag %q missing or not the required value", k), nil)
		}
	}
	if p.check != nil {
		if err := p.check(c); err != nil {
			return newError(ErrPolicy, "check", err)
		}
	}
	return nil
}

// ouAllowed reports whether one of paths is under one of the prefixes.
func (p *compiledPolicy) ouAllowed(paths []string) bool {
	for _, path := range paths {
		if !strings.HasSuffix(path, "/") {
			path += "/"
		}
		for _, pre := range p.ouPrefixes {
			if strings.HasPrefix(path, pre) {
				return true
			}
		}
	}
	return false
}

// globMatch reports whether s matches pattern, where "*" matches any run of
// bytes (including none) and "?" any one character, as IAM's StringLike.
// It runs in O(len(pattern) * len(s)) at worst, with no recursion.
func globMatch(pattern, s string) bool {
	p, i := 0, 0
	star, mark := -1, 0
	for i < len(s) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, i
			p++
		case p < len(pattern) && (pattern[p] == '?' || pattern[p] == s[i]):
			if pattern[p] == '?' {
				_, size := utf8.DecodeRuneInString(s[i:]) // one character
				i += size
			} else {
				i++
			}
			p++
		case star >= 0:
			p = star + 1
			mark++
			i = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}
