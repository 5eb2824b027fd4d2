package stsauth

import (
	"errors"
	"fmt"
	"net/netip"
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
// underscores and dots, up to 253 characters.
func checkHostName(name string) error {
	if len(name) > maxHostLength {
		return fmt.Errorf("host name of %d characters, want at most %d", len(name), maxHostLength)
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("host %q has an empty or over-long label", name)
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return fmt.Errorf("host %q has a character %q not allowed in a host name", name, r)
			}
		}
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

// metadataHostName is the name of the EC2 instance metadata service; any
// name under it ("instance-data.ec2.internal") is refused too.
const metadataHostName = "instance-data"

// ec2MetadataV6 is the IPv6 address of the EC2 instance metadata service.
var ec2MetadataV6 = netip.MustParseAddr("fd00:ec2::254")

// IsMetadataHost reports whether host (without port; IPv6 without brackets)
// is a link-local address (169.254.0.0/16, fe80::/10, or link-local
// multicast), the EC2 instance metadata address fd00:ec2::254, or the
// metadata service's name "instance-data" or a name under it. A trailing dot
// is ignored. Tokens are never sent to such hosts: a request there could hand
// the token to whatever answers on the instance, and metadata paths are a
// classic target of request forgery.
//
// Names are not resolved: a DNS name that resolves to a link-local address is
// not caught here. stsproxy refuses those when it dials.
func IsMetadataHost(host string) bool {
	host = strings.TrimSuffix(host, ".")
	if host == "" {
		return false
	}
	if !mayBeIP(host) {
		host = strings.ToLower(host)
		return host == metadataHostName || strings.HasPrefix(host, metadataHostName+".")
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	ip = ip.Unmap()
	return ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip == ec2MetadataV6
}

// IsLoopbackHost reports whether host (without port; IPv6 without brackets)
// is a loopback address, 127.0.0.0/8 or ::1 (also IPv4-mapped), or the name
// "localhost". A trailing dot is ignored. Other names are not resolved, so
// they are not loopback hosts here.
func IsLoopbackHost(host string) bool {
	host = strings.TrimSuffix(host, ".")
	if host == "" {
		return false
	}
	if !mayBeIP(host) {
		return strings.EqualFold(host, "localhost")
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// mayBeIP reports whether host could be an IP literal: IPv6 has a colon,
// and no DNS name ends in a digit (top-level domains are alphabetic). It
// keeps the common case, a name, away from netip.ParseAddr, whose error
// allocates.
func mayBeIP(host string) bool {
	last := host[len(host)-1]
	return last >= '0' && last <= '9' || strings.IndexByte(host, ':') >= 0
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
