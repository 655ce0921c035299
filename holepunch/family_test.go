package holepunch

import (
	"net/netip"
	"testing"
)

// TestSocketFamily: a technique's sockets follow the family of the
// address it punches toward (an IPv4-mapped IPv6 address is IPv4).
func TestSocketFamily(t *testing.T) {
	for _, c := range []struct {
		peer            string
		udp, laddr, tcp string
	}{
		{"198.51.100.10", "udp4", "0.0.0.0:0", "tcp4"},
		{"2001:db8:200::2", "udp6", "[::]:0", "tcp6"},
		{"::ffff:198.51.100.10", "udp4", "0.0.0.0:0", "tcp4"},
		{"", "udp4", "0.0.0.0:0", "tcp4"}, // no candidate: IPv4, as before
	} {
		var a netip.Addr
		if c.peer != "" {
			a = netip.MustParseAddr(c.peer)
		}
		n, l := udpSocket(a)
		if n != c.udp || l != c.laddr || tcpNetwork(a) != c.tcp {
			t.Errorf("%q: %s %s %s, want %s %s %s", c.peer, n, l, tcpNetwork(a), c.udp, c.laddr, c.tcp)
		}
	}
	if got := firstAddr([]Candidate{{Addr: netip.MustParseAddrPort("[2001:db8::1]:9")}}); got != netip.MustParseAddr("2001:db8::1") {
		t.Errorf("firstAddr %v", got)
	}
}
