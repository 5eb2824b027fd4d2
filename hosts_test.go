package stsauth

import (
	"encoding/binary"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
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
		{"api example.com", "invalid character ' ' in host"},
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
		{"api..example.com", "empty label in host"},
		{strings.Repeat("a", 64) + ".example.com", "label of 64 characters in host, want at most 63"},
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
		"fd00:ec2::253":                            true, // DNS
		"fd00:ec2::23":                             true, // EKS Pod Identity agent
		"fd00:ec2::123":                            true, // NTP
		"fd00:ec2:ffff::1":                         true,
		"fd00:ec3::254":                            false,
		"2852039166":                               true,
		"0xa9fea9fe":                               true,
		"0XA9FEA9FE":                               true,
		"0251.0376.0251.0376":                      true,
		"169.254.43518":                            true,
		"169.16689662":                             true,
		"0xa9.0376.43518":                          true,
		"0xa9.254.0251.0xfe.":                      true,
		"0251.0xfe.169.0376":                       true,
		"4294967296":                               false, // overflows 32 bits
		"169.254.169.256":                          false,
		"169.254.65536":                            false,
		"0259.254.169.254":                         false, // 9 is no octal digit
		"1.169.254.169.254":                        false,
		"2130706433":                               false, // 127.0.0.1
		"metadata.google.internal":                 true,
		"METADATA.Google.Internal.":                true,
		"metadata.google.internal.example.com":     false,
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
		"LocalHost":             true,
		"LocalHost.":            false, // a DNS name to Go's resolver
		"127.1":                 false, // likewise: inet_aton forms are names
		"2130706433":            false,
		"0x7f000001":            false,
		"0177.0.0.1":            false,
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

func TestParseIPv4(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want string // "" if invalid
	}{
		{"169.254.169.254", "169.254.169.254"},
		{"2852039166", "169.254.169.254"},
		{"0xa9fea9fe", "169.254.169.254"},
		{"0251.0376.0251.0376", "169.254.169.254"},
		{"169.254.43518", "169.254.169.254"},
		{"169.16689662", "169.254.169.254"},
		{"127.1", "127.0.0.1"},
		{"0", "0.0.0.0"},
		{"0x", "0.0.0.0"},
		{"00", "0.0.0.0"},
		{"0xffffffff", "255.255.255.255"},
		{"037777777777", "255.255.255.255"},
		{"1.2.3.4", "1.2.3.4"},
		{"01.02.03.010", "1.2.3.8"},
		{"", ""},
		{".", ""},
		{"1.", ""},
		{".1", ""},
		{"1..2", ""},
		{"1.2.3.4.5", ""},
		{"4294967296", ""},
		{"0x100000000", ""},
		{"256.1.1.1", ""},
		{"1.256.1.1", ""},
		{"1.1.65536", ""},
		{"1.16777216", ""},
		{"08", ""},
		{"0xg", ""},
		{"1.2.3.-4", ""},
		{"+1", ""},
		{"1 ", ""},
		{"example.com", ""},
	}
	for _, tc := range tests {
		got, ok := parseIPv4(tc.in)
		if tc.want == "" {
			assert.False(t, ok, "parseIPv4(%q) = %v, want invalid", tc.in, got)
			continue
		}
		if assert.True(t, ok, "parseIPv4(%q) invalid, want %s", tc.in, tc.want) {
			assert.Equal(t, tc.want, got.String(), "parseIPv4(%q)", tc.in)
		}
	}
}

// FuzzParseIPv4 checks the inet_aton parser against the standard dotted
// quad, its own decimal and hexadecimal spellings of the same address, and
// IsMetadataHost, which must refuse every spelling of a link-local address.
func FuzzParseIPv4(f *testing.F) {
	for _, s := range []string{"169.254.169.254", "2852039166", "0xa9fea9fe", "0251.0376.0251.0376", "169.254.43518",
		"127.1", "0x", "08", "1..2", "4294967296", "0xA9.0376.43518", "1.2.3.4.5", "00000000000000000001", "0x0000000001"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ip, ok := parseIPv4(s)
		if std, err := netip.ParseAddr(s); err == nil && std.Is4() {
			require.True(t, ok, "dotted quad %q", s)
			require.Equal(t, std, ip, "dotted quad %q", s)
		}
		if !ok {
			return
		}
		require.True(t, ip.Is4())
		v := binary.BigEndian.Uint32(ip.AsSlice())
		for _, spelling := range []string{strconv.FormatUint(uint64(v), 10), "0x" + strconv.FormatUint(uint64(v), 16), "0" + strconv.FormatUint(uint64(v), 8)} {
			again, ok := parseIPv4(spelling)
			require.True(t, ok, "%q: %q", s, spelling)
			require.Equal(t, ip, again, "%q: %q", s, spelling)
		}
		require.Equal(t, ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast(), IsMetadataHost(s), "IsMetadataHost(%q), address %v", s, ip)
	})
}

func TestParseHostPort(t *testing.T) {
	t.Parallel()
	valid := []struct{ in, host, port string }{
		{"api.example.com", "api.example.com", ""},
		{"API.example.com:8443", "API.example.com", "8443"},
		{"127.0.0.1", "127.0.0.1", ""},
		{"127.0.0.1:1", "127.0.0.1", "1"},
		{"[::1]", "::1", ""},
		{"[2001:db8::1]:443", "2001:db8::1", "443"},
		{"a_b.example", "a_b.example", ""},
		{"x.example.", "x.example.", ""},
		{"169.254.169.254", "169.254.169.254", ""}, // well formed; IsMetadataHost refuses it
		{"1e100.net", "1e100.net", ""},
		{strings.Repeat("a", 63) + ".example", strings.Repeat("a", 63) + ".example", ""},
	}
	for _, tc := range valid {
		host, port, err := ParseHostPort(tc.in)
		if assert.NoError(t, err, tc.in) {
			assert.Equal(t, tc.host, host, tc.in)
			assert.Equal(t, tc.port, port, tc.in)
		}
	}
	invalid := []struct{ in, want string }{
		{"", "empty host"},
		{strings.Repeat("a", 261), "longer than 260 characters"},
		{strings.Repeat("a", 254), "host name of 254 characters, want at most 253"},
		{strings.Repeat("a", 64) + ".example", "label of 64 characters"},
		{"https://x.example", "must not include a scheme"},
		{"x.example/p", "must not include a path"},
		{`x.example\p`, "must not include a path"},
		{"x.example?q", "must not include a query or fragment"},
		{"x.example#f", "must not include a query or fragment"},
		{"u:p@x.example", "must not include userinfo"},
		{"x .example", "contains white space"},
		{"x\t.example", "contains a control character"},
		{"x\x00", "contains a control character"},
		{"x\x7f", "contains a control character"},
		{"é.example", "non-ASCII"},
		{"x.example:", `port "", want a number from 1 to 65535`},
		{"x.example:0", `port "0", want a number from 1 to 65535`},
		{"x.example:65536", `port "65536", want a number from 1 to 65535`},
		{"x.example:+80", `port "+80", want a number from 1 to 65535`},
		{"x.example:http", `port "http", want a number from 1 to 65535`},
		{"x.example:080", `port "080", want a number from 1 to 65535`},
		{":80", "empty host"},
		{"[::1", "unbalanced IPv6 brackets"},
		{"::1]", "unbalanced IPv6 brackets"},
		{"x]", "unbalanced IPv6 brackets"},
		{"::1", "IPv6 address must be in brackets"},
		{"[::1]x", "unexpected text after the IPv6 address"},
		{"[::1]:", `port "", want a number from 1 to 65535`},
		{"[127.0.0.1]", "in brackets is not an IPv6 address"},
		{"[fe80::1%eth0]", "zones are not allowed"},
		{"a..b", "empty label"},
		{".a", "empty label"},
		{"a*b", "invalid character"},
		{"2852039166", "IPv4 address must be four decimal numbers"},
		{"0xa9fea9fe:80", "IPv4 address must be four decimal numbers"},
		{"0251.0376.0251.0376", "IPv4 address must be four decimal numbers"},
		{"169.254.43518.", "IPv4 address must be four decimal numbers"},
		{"127.1", "IPv4 address must be four decimal numbers"},
	}
	for _, tc := range invalid {
		_, _, err := ParseHostPort(tc.in)
		if assert.Error(t, err, "ParseHostPort(%q)", tc.in) {
			assert.Contains(t, err.Error(), tc.want, "ParseHostPort(%q)", tc.in)
		}
	}
}

// TestHostChecksDoNotAllocate holds the per-request host checks of
// Transport.RoundTrip at zero allocations.
func TestHostChecksDoNotAllocate(t *testing.T) {
	tr := &Transport{RequireTLS: true}
	req := httptest.NewRequest(http.MethodGet, "https://api.example.com/v1/things", nil)
	for _, h := range []string{"api.example.com", "API.Example.COM.", "10.0.0.7", "2852039166", "0xa9fea9fe", "fd00:ec2::254", "instance-data.ec2.internal", "1e100.net"} {
		assert.Zero(t, testing.AllocsPerRun(100, func() { IsMetadataHost(h); IsLoopbackHost(h) }), h)
	}
	assert.Zero(t, testing.AllocsPerRun(100, func() {
		if _, err := tr.hostAllowed(req); err != nil {
			t.Fatal(err)
		}
	}))
}

func TestAllowedHostsAudiences(t *testing.T) {
	t.Parallel()
	a, err := ParseAllowedHosts("*.example.com:443", "[2001:DB8::1]", "Api.Other.example", "api.other.example:8443", "*.b.example")
	require.NoError(t, err)
	exact, patterns := a.Audiences("HTTPS")
	assert.Equal(t, []Audience{MustAudience("https://[2001:db8::1]"), MustAudience("https://api.other.example")}, exact)
	assert.Equal(t, []string{"https://*.b.example", "https://*.example.com", "https://[2001:db8::1]", "https://api.other.example"}, patterns)
	for _, aud := range exact {
		host := strings.TrimPrefix(aud.Values()[0], "https://")
		derived, err := HostAudience{}.ResolveAudience(&http.Request{URL: &url.URL{Scheme: "https", Host: host}})
		require.NoError(t, err)
		assert.Equal(t, aud, derived, "what HostAudience derives for %s", host)
	}
}
