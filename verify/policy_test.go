package verify

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stsauth/stsauth/ststest"
)

func TestPolicy(t *testing.T) {
	t.Parallel()
	claims := func() *Claims {
		return &Claims{
			Subject: "arn:aws:iam::123456789012:role/sub",
			AWS: AWSClaims{
				Account:     "123456789012",
				OrgID:       "o-a1b2c3d4e5",
				OUPath:      []string{"o-a1b2c3d4e5/r-ab12/ou-ab12-11111111/ou-ab12-22222222/"},
				PrincipalID: "arn:aws:iam::123456789012:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_Admin_0123456789abcdef",
				RequestTags: map[string]string{"team": "payments", "env": "prod"},
			},
		}
	}
	errCustom := errors.New("custom rule")
	tests := []struct {
		name   string
		policy Policy
		edit   func(c *Claims)
		allow  bool
	}{
		{"zero policy", Policy{}, nil, true},
		{"account allowed", Policy{Accounts: []string{"111111111111", "123456789012"}}, nil, true},
		{"account refused", Policy{Accounts: []string{"111111111111"}}, nil, false},
		{"org allowed", Policy{OrgIDs: []string{"o-a1b2c3d4e5"}}, nil, true},
		{"org refused", Policy{OrgIDs: []string{"o-zzzzzzzzzz"}}, nil, false},
		{"org absent", Policy{OrgIDs: []string{"o-a1b2c3d4e5"}}, func(c *Claims) { c.AWS.OrgID = "" }, false},
		{"OU prefix", Policy{OUPathPrefixes: []string{"o-a1b2c3d4e5/r-ab12/ou-ab12-11111111/"}}, nil, true},
		{"OU prefix without slash", Policy{OUPathPrefixes: []string{"o-a1b2c3d4e5/r-ab12/ou-ab12-11111111"}}, nil, true},
		{"OU exact path", Policy{OUPathPrefixes: []string{"o-a1b2c3d4e5/r-ab12/ou-ab12-11111111/ou-ab12-22222222/"}}, nil, true},
		{"OU prefix is a whole segment", Policy{OUPathPrefixes: []string{"o-a1b2c3d4e5/r-ab12/ou-ab12-1111"}}, nil, false},
		{"OU sibling", Policy{OUPathPrefixes: []string{"o-a1b2c3d4e5/r-ab12/ou-ab12-33333333/"}}, nil, false},
		{"OU one of several paths", Policy{OUPathPrefixes: []string{"o-a1b2c3d4e5/r-ab12/ou-ab12-33333333/"}}, func(c *Claims) {
			c.AWS.OUPath = append(c.AWS.OUPath, "o-a1b2c3d4e5/r-ab12/ou-ab12-33333333/")
		}, true},
		{"OU absent", Policy{OUPathPrefixes: []string{"o-a1b2c3d4e5/"}}, func(c *Claims) { c.AWS.OUPath = nil }, false},
		{"principal glob", Policy{Principals: []string{"arn:aws:iam::123456789012:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_Admin_*"}}, nil, true},
		{"principal glob refused", Policy{Principals: []string{"arn:aws:iam::123456789012:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_Dev_*"}}, nil, false},
		{"principal ? wildcard", Policy{Principals: []string{"arn:aws:iam::12345678901?:role/*"}}, nil, true},
		{"principal exact", Policy{Principals: []string{"arn:aws:iam::123456789012:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_Admin_0123456789abcdef"}}, nil, true},
		{"principal is case-sensitive", Policy{Principals: []string{"arn:aws:iam::123456789012:role/aws-reserved/sso.amazonaws.com/awsreservedsso_admin_*"}}, nil, false},
		{"principal falls back to sub", Policy{Principals: []string{"*:role/sub"}}, func(c *Claims) { c.AWS.PrincipalID = "" }, true},
		{"request tags", Policy{RequestTags: map[string]string{"team": "payments"}}, nil, true},
		{"request tag wrong value", Policy{RequestTags: map[string]string{"team": "search"}}, nil, false},
		{"request tag missing", Policy{RequestTags: map[string]string{"owner": "x"}}, nil, false},
		{"request tag empty value required", Policy{RequestTags: map[string]string{"owner": ""}}, nil, false},
		{"check passes", Policy{Check: func(c *Claims) error { return nil }}, nil, true},
		{"check refuses", Policy{Check: func(c *Claims) error { return errCustom }}, nil, false},
		{"all rules", Policy{
			Accounts:       []string{"123456789012"},
			OrgIDs:         []string{"o-a1b2c3d4e5"},
			OUPathPrefixes: []string{"o-a1b2c3d4e5/r-ab12/"},
			Principals:     []string{"arn:aws:iam::123456789012:role/*"},
			RequestTags:    map[string]string{"env": "prod"},
		}, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, err := compilePolicy(tc.policy)
			require.NoError(t, err)
			c := claims()
			if tc.edit != nil {
				tc.edit(c)
			}
			err = p.allow(c)
			if tc.allow {
				assert.NoError(t, err)
				return
			}
			assert.ErrorIs(t, err, ErrPolicy)
		})
	}
	p, err := compilePolicy(Policy{Check: func(*Claims) error { return errCustom }})
	require.NoError(t, err)
	assert.ErrorIs(t, p.allow(claims()), errCustom, "the hook's error is kept")
}

func TestGlobMatch(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		pattern, s string
		want       bool
	}{
		{"", "", true},
		{"*", "", true},
		{"*", "anything", true},
		{"a*", "a", true},
		{"a*c", "abbbc", true},
		{"a*c", "abbbd", false},
		{"*a*b*c*", "xxaxxbxxcxx", true},
		{"a?c", "abc", true},
		{"a?c", "ac", false},
		{"a?c", "aéc", true},
		{"abc", "abcd", false},
		{"**", "x", true},
		{"a*b*c*d*e*f*g*h*i*j*k", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false},
	} {
		assert.Equal(t, tc.want, globMatch(tc.pattern, tc.s), "globMatch(%q, %q)", tc.pattern, tc.s)
	}
}

func TestPolicyThroughVerify(t *testing.T) {
	t.Parallel()
	clock := newClock()
	s := startSTS(t, clock, func(s *ststest.Server) {
		s.OrgID = "o-a1b2c3d4e5"
		s.OUPath = []string{"o-a1b2c3d4e5/r-ab12/ou-ab12-11111111/"}
	})
	newV := func(p Policy) *Verifier {
		return newTestVerifier(t, clock, Config{Issuers: []Issuer{{URL: s.URL}}, Audiences: []string{aud}, Policy: p})
	}
	tok := mint(t, s, "RS256", aud)
	_, err := newV(Policy{OrgIDs: []string{"o-a1b2c3d4e5"}, OUPathPrefixes: []string{"o-a1b2c3d4e5/r-ab12/"}}).Verify(t.Context(), tok)
	assert.NoError(t, err)
	_, err = newV(Policy{OUPathPrefixes: []string{"o-a1b2c3d4e5/r-ab12/ou-ab12-99999999/"}}).Verify(t.Context(), tok)
	assert.ErrorIs(t, err, ErrPolicy)
}
