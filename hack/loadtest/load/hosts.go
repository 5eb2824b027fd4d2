package load

import (
	"fmt"
	"net/netip"
	"strconv"
)

// loopback is the IPv4 loopback network.
var loopback = netip.MustParsePrefix("127.0.0.0/8")

// LoopbackHosts returns n distinct "addr:port" values from prefix, which must
// lie within 127.0.0.0/8, starting at its second address (the first is the
// network address) and skipping 127.255.255.255. It fails if prefix holds
// fewer than n usable addresses.
func LoopbackHosts(prefix string, n, port int) ([]string, error) {
	p, err := netip.ParsePrefix(prefix)
	if err != nil {
		return nil, fmt.Errorf("load: hosts prefix %q: %w", prefix, err)
	}
	p = p.Masked()
	if !p.Addr().Is4() || p.Bits() < loopback.Bits() || !loopback.Contains(p.Addr()) {
		return nil, fmt.Errorf("load: hosts prefix %q: must lie within %s", prefix, loopback)
	}
	if n < 1 {
		return nil, fmt.Errorf("load: hosts count %d: want at least 1", n)
	}
	if port < 1 || port > 65535 {
		return nil, fmt.Errorf("load: hosts port %d: want 1 to 65535", port)
	}
	// Usable: every address but the network address and, for the whole
	// /8, the broadcast address.
	usable := (1 << (32 - p.Bits())) - 1
	if p.Bits() == loopback.Bits() {
		usable--
	}
	if n > usable {
		return nil, fmt.Errorf("load: hosts count %d: %s has only %d usable addresses", n, p, usable)
	}
	ps := ":" + strconv.Itoa(port)
	hosts := make([]string, 0, n)
	a := p.Addr()
	for range n {
		a = a.Next()
		hosts = append(hosts, a.String()+ps)
	}
	return hosts, nil
}
