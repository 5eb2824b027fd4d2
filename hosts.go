package stsauth

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// ErrHostNotAllowed is wrapped by the error of a request that [Transport]
// refuses to send because a token must not go to its host.
var ErrHostNotAllowed = errors.New("host not allowed")

// maxHostLength is the longest host name (RFC 1035) a pattern may hold.
const maxHostLength = 253

// AllowedHosts is a set of host patterns that may receive tokens. A pattern
// is an exact host name or IP address ("api.example.com", "10.0.0.7",
// "[2001:db8::1]") or a wildcard that matches every subdomain, at any depth,
// but not the domain itself ("*.example.com"). Either may end in ":port" to
// allow only that port; without one, every port is allowed. Matching ignores
// case.
//
// An AllowedHosts is immutable and safe for concurrent use.
type AllowedHosts struct {
	exact    map[string][]string // host → allowed ports; an empty port allows all
	suffixes []hostPattern       // wildcards, suffix with its leading dot
}

type hostPattern struct {
	suffix string // ".example.com"
	port   string // "" for any
}

// ParseAllowedHosts parses host patterns. It fails, naming the pattern, if one
// is empty or holds a scheme, a path, user info, white space, a bad port, or
// a wildcard anywhere but a leading "*.".
func ParseAllowedHosts(patterns ...string) (*AllowedHosts, error) {
	a := &AllowedHosts{exact: make(map[string][]string)}
	for _, p := range patterns {
		host, port, err := splitPattern(p)
		if err != nil {
			return nil, fmt.Errorf("stsauth: allowed host %q: %w", p, err)
		}
		if rest, ok := strings.CutPrefix(host, "*."); ok {
			a.suffixes = append(a.suffixes, hostPattern{suffix: "." + rest, port: port})
			continue
		}
		a.exact[host] = append(a.exact[host], port)
	}
	return a, nil
}

// splitPattern validates an allowlist pattern and returns its lower-case host
// (IPv6 without brackets) and port ("" for any).
func splitPattern(p string) (host, port string, err error) {
	p = strings.TrimSpace(p)
	switch {
	case p == "":
		return "", "", errors.New("empty pattern")
	case strings.Contains(p, "://"):
		return "", "", errors.New("a pattern is a host, not a URL: drop the scheme")
	case strings.ContainsAny(p, "/?#"):
		return "", "", errors.New("a pattern is a host: drop the path")
	case strings.Contains(p, "@"):
		return "", "", errors.New("a pattern may not hold user info")
	}
	host, port, err = SplitHostPort(p)
	if err != nil {
		return "", "", err
	}
	name := strings.TrimPrefix(host, "*.")
	if name == "" || strings.Contains(name, "*") {
		return "", "", errors.New(`a wildcard must be a leading "*." before a domain`)
	}
	if _, err := netip.ParseAddr(name); err != nil {
		if err := checkHostName(name); err != nil {
			return "", "", err
		}
	} else if name != host {
		return "", "", errors.New("a wildcard cannot precede an IP address")
	}
	return strings.ToLower(host), port, nil
}

// SplitHostPort splits "host", "host:port", "[v6]" or "[v6]:port" into a host
// (IPv6 without brackets) and a port ("" if none). Unlike [net.SplitHostPort]
// the port is optional; it must be a number from 1 to 65535 when present.
// A bare IPv6 address without brackets is accepted as a host with no port.
func SplitHostPort(hostport string) (host, port string, err error) {
	switch {
	case strings.HasPrefix(hostport, "["):
		end := strings.IndexByte(hostport, ']')
		if end < 0 {
			return "", "", errors.New("unbalanced IPv6 brackets")
		}
		host, rest := hostport[1:end], hostport[end+1:]
		if ip, err := netip.ParseAddr(host); err != nil || !ip.Is6() {
			return "", "", fmt.Errorf("%q in brackets is not an IPv6 address", host)
		}
		if rest == "" {
			return host, "", nil
		}
		port, ok := strings.CutPrefix(rest, ":")
		if !ok {
			return "", "", errors.New("unexpected text after the IPv6 address")
		}
		return host, port, checkPort(port)
	case strings.Count(hostport, ":") > 1:
		if strings.Contains(hostport, "]") {
			return "", "", errors.New("unbalanced IPv6 brackets")
		}
		if ip, err := netip.ParseAddr(hostport); err != nil || !ip.Is6() {
			return "", "", fmt.Errorf("%q is not a valid IPv6 address", hostport)
		}
		return hostport, "", nil
	case strings.Contains(hostport, "]"):
		return "", "", errors.New("unbalanced IPv6 brackets")
	}
	host, port, found := strings.Cut(hostport, ":")
	if !found {
		return host, "", nil
	}
	return host, port, checkPort(port)
}

func checkPort(port string) error {
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 || port[0] == '0' || port[0] == '+' {
		return fmt.Errorf("port %q, want a number from 1 to 65535", port)
	}
	return nil
}

// checkHostName accepts DNS names made of letters, digits, hyphens,
// underscores and dots, with labels of 1 to 63 characters, up to 253
// characters in all. Its messages never quote the name, which may come from
// a client.
func checkHostName(name string) error {
	if len(name) > maxHostLength {
		return fmt.Errorf("host name of %d characters, want at most %d", len(name), maxHostLength)
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" {
			return errors.New("empty label in host")
		}
		if len(label) > 63 {
			return fmt.Errorf("label of %d characters in host, want at most 63", len(label))
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return fmt.Errorf("invalid character %q in host", r)
			}
		}
	}
	return nil
}

// maxHostPortLength is the longest host[:port] ParseHostPort accepts: a
// host name of maxHostLength, a trailing dot and ":65535".
const maxHostPortLength = maxHostLength + len(".:65535")

// ParseHostPort parses a host[:port] that comes from an untrusted client,
// such as the header a header-routed proxy picks its upstream by, and
// returns the host (IPv6 without brackets) and the port ("" if none). The
// split and the port rule (1 to 65535) are [SplitHostPort]'s; on top of it,
// because the value becomes a URL host, ParseHostPort refuses:
//
//   - an empty value, or one longer than 260 characters;
//   - control characters, white space and non-ASCII (use punycode);
//   - a scheme, user info, a path (also with a backslash), a query or a fragment;
//   - IPv6 without brackets, or with a zone;
//   - an IPv4 address in any spelling but four decimal numbers (a resolver
//     may read "2852039166" or "0xa9fea9fe" as 169.254.169.254);
//   - host names with characters other than letters, digits, '-', '_' and
//     '.', with an empty label or one over 63 characters, or over 253
//     characters; one trailing dot is allowed.
//
// It does not decide where a token may go: check the host with
// [IsMetadataHost] and [AllowedHosts] as well. Its errors say what is wrong
// without quoting the value, beyond a port or a bracketed address once they
// are known to be short printable ASCII.
func ParseHostPort(hostport string) (host, port string, err error) {
	if err := checkRawHost(hostport); err != nil {
		return "", "", err
	}
	host, port, err = SplitHostPort(hostport)
	if err != nil {
		return "", "", err
	}
	if strings.HasPrefix(hostport, "[") {
		if strings.IndexByte(host, '%') >= 0 {
			return "", "", errors.New("invalid IPv6 address in brackets: zones are not allowed")
		}
		return host, port, nil
	}
	if strings.IndexByte(host, ':') >= 0 {
		return "", "", errors.New("IPv6 address must be in brackets")
	}
	if host == "" {
		return "", "", errors.New("empty host")
	}
	if err := checkHostName(strings.TrimSuffix(host, ".")); err != nil {
		return "", "", err
	}
	if _, ok := parseIPv4(strings.TrimSuffix(host, ".")); ok {
		if ip, err := netip.ParseAddr(host); err != nil || !ip.Is4() {
			return "", "", errors.New("IPv4 address must be four decimal numbers, a.b.c.d")
		}
	}
	return host, port, nil
}

// checkRawHost holds the checks of ParseHostPort that SplitHostPort does not
// make: length, character set, and no scheme, user info, path, query or
// fragment.
func checkRawHost(v string) error {
	switch {
	case v == "":
		return errors.New("empty host")
	case len(v) > maxHostPortLength:
		return fmt.Errorf("longer than %d characters", maxHostPortLength)
	}
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c < 0x20 || c == 0x7f:
			return errors.New("contains a control character")
		case c == ' ':
			return errors.New("contains white space")
		case c >= 0x80:
			return errors.New("contains a non-ASCII character; use the punycode form")
		}
	}
	switch {
	case strings.Contains(v, "://"):
		return errors.New("must not include a scheme")
	case strings.Contains(v, "@"):
		return errors.New("must not include userinfo")
	case strings.ContainsAny(v, "/\\"):
		return errors.New("must not include a path")
	case strings.ContainsAny(v, "?#"):
		return errors.New("must not include a query or fragment")
	}
	return nil
}

// Allows reports whether a host, written as in a URL ("api.example.com",
// "api.example.com:8443", "[2001:db8::1]:443"), matches a pattern. A host
// without a port matches only patterns without one; [AllowedHosts.AllowsURLHost]
// fills in a scheme's default port, as [Transport] does.
func (a *AllowedHosts) Allows(hostport string) bool {
	host, port, err := SplitHostPort(hostport)
	if err != nil {
		return false
	}
	return a.allows(strings.ToLower(host), port)
}

// AllowsURLHost reports whether a request to hostport with the given URL
// scheme may be sent, as [Transport] decides: a host without a port is taken
// at the scheme's default port (443 for https, 80 for http), so
// "api.example.com:443" admits https://api.example.com.
func (a *AllowedHosts) AllowsURLHost(scheme, hostport string) bool {
	host, port, err := SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if port == "" {
		port = defaultPort(strings.ToLower(scheme))
	}
	return a.allows(strings.ToLower(host), port)
}

// Audiences returns the audiences [HostAudience] derives, with scheme, for
// the requests a allows. In exact, an audience set for each exact host's
// origin: the sets a tool can ask tokens for (stsproxy doctor does). In
// patterns, the origin of every host, a "*.suffix" kept as an IAM wildcard:
// [PolicyParams.AudiencePatterns] for a role whose audiences are derived per
// request (stsproxy policy uses them). Ports are dropped, as HostAudience
// drops them; both are sorted, without duplicates.
func (a *AllowedHosts) Audiences(scheme string) (exact []Audience, patterns []string) {
	origin := func(host string) string {
		if strings.Contains(host, ":") { // IPv6 literal: keep the brackets
			host = "[" + host + "]"
		}
		return strings.ToLower(scheme) + "://" + host
	}
	for _, host := range slices.Sorted(maps.Keys(a.exact)) {
		if aud, err := NewAudience(origin(host)); err == nil {
			exact = append(exact, aud)
			patterns = append(patterns, aud.Values()[0])
		}
	}
	for _, s := range a.suffixes {
		patterns = append(patterns, origin("*"+s.suffix))
	}
	slices.Sort(patterns)
	return exact, slices.Compact(patterns)
}

// allows matches a lower-case host (IPv6 unbracketed) and port.
func (a *AllowedHosts) allows(host, port string) bool {
	for _, p := range a.exact[host] {
		if p == "" || p == port {
			return true
		}
	}
	for _, s := range a.suffixes {
		if strings.HasSuffix(host, s.suffix) && (s.port == "" || s.port == port) {
			return true
		}
	}
	return false
}

// Names of instance metadata services: the EC2 one ("instance-data"; any
// name under it, such as "instance-data.ec2.internal", is refused too) and
// Google Cloud's.
const (
	metadataHostName    = "instance-data"
	gcpMetadataHostName = "metadata.google.internal"
)

// ec2InternalV6 is fd00:ec2::/32, where EC2 serves the instance metadata
// service (::254), the EKS Pod Identity agent (::23), DNS (::253) and NTP
// (::123).
var ec2InternalV6 = netip.MustParsePrefix("fd00:ec2::/32")

// IsMetadataHost reports whether host (without port; IPv6 without brackets)
// is a target tokens must never be sent to:
//
//   - a link-local address: 169.254.0.0/16, fe80::/10, or link-local
//     multicast (224.0.0.0/24, ff02::/16), also IPv4-mapped;
//   - an address in fd00:ec2::/32, where EC2 serves the instance metadata
//     service, the EKS Pod Identity agent, DNS and NTP;
//   - the name "instance-data" or a name under it, or
//     "metadata.google.internal".
//
// Case and a trailing dot are ignored. An IPv4 address is read as inet_aton
// and the resolvers built on it read it, so every spelling of 169.254.169.254
// is caught: "2852039166", "0xa9fea9fe", "0251.0376.0251.0376",
// "169.254.43518" and mixed forms. Tokens are never sent to such hosts: a
// request there could hand the token to whatever answers on the instance, and
// metadata paths are a classic target of request forgery.
//
// Names are not resolved: a DNS name that resolves to a link-local address is
// not caught here, but by [GuardDialControl] when the connection is made.
func IsMetadataHost(host string) bool {
	host = strings.TrimSuffix(host, ".")
	if host == "" {
		return false
	}
	if strings.IndexByte(host, ':') >= 0 {
		ip, err := netip.ParseAddr(host)
		return err == nil && isMetadataAddr(ip)
	}
	if c := host[0]; c >= '0' && c <= '9' {
		if ip, ok := parseIPv4(host); ok {
			return isMetadataAddr(ip)
		}
	}
	return strings.EqualFold(host, metadataHostName) ||
		hasPrefixFold(host, metadataHostName+".") ||
		strings.EqualFold(host, gcpMetadataHostName)
}

// isMetadataAddr reports whether ip is an address [IsMetadataHost] refuses.
func isMetadataAddr(ip netip.Addr) bool {
	ip = ip.Unmap()
	return ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ec2InternalV6.Contains(ip.WithZone(""))
}

// hasPrefixFold reports whether s starts with prefix, ignoring ASCII case.
func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// parseIPv4 parses an IPv4 address as inet_aton(3) does, and with it the
// resolvers of most C libraries: one to four parts separated by dots, each
// decimal, octal with a leading "0", or hexadecimal with a leading "0x"; the
// last part fills the bytes the others leave, so "127.1" is 127.0.0.1 and
// "2852039166" is 169.254.169.254. It reports false for anything else,
// including a value that overflows its bytes. It does not allocate.
func parseIPv4(s string) (netip.Addr, bool) {
	var parts [4]uint32
	n := 0
	for {
		if n == len(parts) {
			return netip.Addr{}, false
		}
		end := strings.IndexByte(s, '.')
		if end < 0 {
			end = len(s)
		}
		v, ok := parseIPv4Part(s[:end])
		if !ok {
			return netip.Addr{}, false
		}
		parts[n] = v
		n++
		if end == len(s) {
			break
		}
		s = s[end+1:]
	}
	// The last part fills 4-(n-1) bytes; each other part fills one.
	var v uint32
	for i := 0; i < n-1; i++ {
		if parts[i] > 0xff {
			return netip.Addr{}, false
		}
		v |= parts[i] << (24 - 8*i)
	}
	last := parts[n-1]
	if bits := 8 * (5 - n); bits < 32 && last>>bits != 0 {
		return netip.Addr{}, false
	}
	v |= last
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), true
}

// parseIPv4Part parses one part of an inet_aton address: decimal, octal
// with a leading 0 or hexadecimal with a leading 0x ("0x" alone is 0, as in
// glibc), at most 0xffffffff.
func parseIPv4Part(p string) (uint32, bool) {
	if p == "" {
		return 0, false
	}
	base := uint64(10)
	switch {
	case len(p) >= 2 && p[0] == '0' && (p[1] == 'x' || p[1] == 'X'):
		base, p = 16, p[2:]
	case len(p) >= 2 && p[0] == '0':
		base, p = 8, p[1:]
	}
	var v uint64
	for i := 0; i < len(p); i++ {
		var d uint64
		switch c := p[i]; {
		case c >= '0' && c <= '9':
			d = uint64(c - '0')
		case c >= 'a' && c <= 'f':
			d = uint64(c-'a') + 10
		case c >= 'A' && c <= 'F':
			d = uint64(c-'A') + 10
		default:
			return 0, false
		}
		if d >= base {
			return 0, false
		}
		v = v*base + d
		if v > 0xffffffff {
			return 0, false
		}
	}
	return uint32(v), true
}

// IsLoopbackHost reports whether host (without port; IPv6 without brackets)
// is a loopback address written as an IP literal, 127.0.0.0/8 in four
// decimal numbers or ::1 (also IPv4-mapped), or the name "localhost" (any
// case), which resolvers answer from the hosts file. Anything else may be
// looked up in DNS and is not a loopback host here: Go's resolver sends
// "127.1", "2130706433" and "localhost." to DNS, which may answer with an
// address across the network.
func IsLoopbackHost(host string) bool {
	if strings.IndexByte(host, ':') < 0 {
		// Only a name or an IPv4 literal. parseIPv4 does not allocate and
		// rules most hosts out; netip then insists on four decimals.
		if ip, ok := parseIPv4(host); !ok || !ip.IsLoopback() {
			return strings.EqualFold(host, "localhost")
		}
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// defaultPort returns the port a URL scheme implies.
func defaultPort(scheme string) string {
	switch scheme {
	case "https", "wss":
		return "443"
	case "http", "ws":
		return "80"
	}
	return ""
}
