package stsauth

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseAllowedHostsRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		pattern string
		wantErr string
	}{
		{"", "empty pattern"},
		{"https://api.example.com", "drop the scheme"},
		{"api.example.com/v1", "drop the path"},
		{"user@api.example.com", "user info"},
		{"api example.com", "not allowed in a host name"},
		{"api.example.com:0", `port "0", want a number from 1 to 65535`},
		{"api.example.com:65536", "65535"},
		{"api.example.com:http", "65535"},
		{"api.example.com:", "65535"},
		{"*", "leading"},
		{"*.", "leading"},
		{"a.*.example.com", "leading"},
		{"*example.com", "leading"},
		{"*.10.0.0.1", "cannot precede an IP"},
		{"[::1", "unbalanced"},
		{"::1]", "unbalanced"},
		{"[example.com]", "not an IPv6 address"},
		{"api..example.com", "empty or over-long label"},
		{strings.Repeat("a", 254), "at most 253"},
	}
	for _, tc := range tests {
		_, err := ParseAllowedHosts("ok.example.com", tc.pattern)
		require.Error(t, err, "pattern %q", tc.pattern)
		assert.Contains(t, err.Error(), tc.wantErr, "pattern %q", tc.pattern)
		assert.Contains(t, err.Error(), "stsauth: allowed host", "pattern %q", tc.pattern)
	}
}

func TestAllowedHostsAllows(t *testing.T) {
	t.Parallel()
	a, err := ParseAllowedHosts("api.example.com", "*.svc.example.com", "pinned.example.com:8443", "10.0.0.7", "[2001:db8::1]:443", "::2", " Mixed.Example.COM ")
	require.NoError(t, err)
	tests := []struct {
		host string
		want bool
	}{
		{"api.example.com", true},
		{"API.EXAMPLE.COM:9999", true},
		{"other.example.com", false},
		{"a.svc.example.com", true},
		{"a.b.svc.example.com:1234", true},
		{"svc.example.com", false},
		{"evilsvc.example.com", false},
		{"pinned.example.com:8443", true},
		{"pinned.example.com:443", false},
		{"pinned.example.com", false},
		{"10.0.0.7:80", true},
		{"10.0.0.8", false},
		{"[2001:db8::1]:443", true},
		{"[2001:db8::1]:80", false},
		{"[::2]:1", true},
		{"mixed.example.com", true},
		{"[::1", false},
		{"", false},
	}
	for _, tc := range tests {
		assert.Equal(t, tc.want, a.Allows(tc.host), "Allows(%q)", tc.host)
	}
}

func TestIsMetadataHost(t *testing.T) {
	t.Parallel()
	for host, want := range map[string]bool{
		"169.254.169.254":            true,
		"169.254.170.2":              true,
		"fd00:ec2::254":              true,
		"FD00:EC2::254":              true,
		"fe80::1":                    true,
		"::ffff:169.254.169.254":     true,
		"instance-data":              true,
		"instance-data.ec2.internal": true,
		"instance-data.":             true,
		"Instance-Data.us-west-2.compute.internal": true,
		"169.254.169.254.":                         true,
		"ff02::1":                                  true,
		"224.0.0.251":                              true,
		"instance-database.example":                false,
		"169.255.0.1":                              false,
		"127.0.0.1":                                false,
		"api.example.com":                          false,
		"fd00:ec2::253":                            false,
	} {
		assert.Equal(t, want, IsMetadataHost(host), host)
	}
}

// FuzzAllowedHosts checks that parsing and matching never panic and that an
// exact pattern that parses admits its own host.
func FuzzAllowedHosts(f *testing.F) {
	for _, s := range []string{"api.example.com", "*.example.com:443", "[::1]:8080", "::1", "[::1", "a:b:c", "*.", "x:0", "10.0.0.1", "é.com"} {
		f.Add(s, "api.example.com:443")
	}
	f.Fuzz(func(t *testing.T, pattern, host string) {
		a, err := ParseAllowedHosts(pattern)
		if err != nil {
			return
		}
		_ = a.Allows(host)
		if strings.HasPrefix(strings.TrimSpace(pattern), "*.") {
			return
		}
		h, port, err := SplitHostPort(strings.TrimSpace(pattern))
		require.NoError(t, err)
		hp := h
		if strings.Contains(h, ":") {
			hp = "[" + h + "]"
		}
		if port != "" {
			hp += ":" + port
		}
		require.True(t, a.Allows(hp), "pattern %q must admit %q", pattern, hp)
	})
}

func TestAllowedHostsAllowsURLHostUsesTheSchemesDefaultPort(t *testing.T) {
	t.Parallel()
	a, err := ParseAllowedHosts("api.example.com:443", "plain.example.com:80", "[::1]:443", "any.example.com")
	require.NoError(t, err)
	tests := []struct {
		scheme, host string
		want         bool
	}{
		{"https", "api.example.com", true},
		{"HTTPS", "API.example.com", true},
		{"http", "api.example.com", false},
		{"https", "api.example.com:8443", false},
		{"http", "plain.example.com", true},
		{"https", "[::1]", true},
		{"https", "[::1]:8", false},
		{"ftp", "any.example.com", true},
		{"https", "[::1", false},
	}
	for _, tc := range tests {
		assert.Equal(t, tc.want, a.AllowsURLHost(tc.scheme, tc.host), "AllowsURLHost(%q, %q)", tc.scheme, tc.host)
	}
}

func TestIsLoopbackHost(t *testing.T) {
	t.Parallel()
	for host, want := range map[string]bool{
		"127.0.0.1":             true,
		"127.255.0.9":           true,
		"::1":                   true,
		"::ffff:127.0.0.1":      true,
		"localhost":             true,
		"LocalHost.":            true,
		"":                      false,
		"10.0.0.1":              false,
		"::2":                   false,
		"localhost.example.com": false,
		"api.localhost.example": false,
		"128.0.0.1":             false,
		"0.0.0.0":               false,
		"example.com":           false,
	} {
		assert.Equal(t, want, IsLoopbackHost(host), host)
	}
}
