package natclass

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// TestReadTrace64 reads traces through a NAT64: the kernel lab's (tayga
// on a home router whose IPv4 NAT then masquerades its pool), a carrier
// NAT64 whose IPv4 side is public, and traces that never cross it.
func TestReadTrace64(t *testing.T) {
	a := netip.MustParseAddr
	p := netip.MustParsePrefix("2001:db8:64::/96")
	syn := func(v4 string) netip.Addr { return Synthesize(p, a(v4)) }
	var none netip.Addr
	srv, pub := syn("203.0.113.10"), a("198.51.100.10")
	hops := func(as ...netip.Addr) []netip.Addr {
		h := make([]netip.Addr, maxHops)
		copy(h, as)
		return h
	}
	for _, c := range []struct {
		name       string
		hops       []netip.Addr
		end        int
		reached    bool
		want       int
		wantHops   []string
		wantReason string
	}{
		// Measured in the lab: the router (IPv6), tayga (its pool
		// address), the router's IPv4 forwarding (the mapped address),
		// the internet router.
		{"tayga behind a home NAT", hops(a("2001:db8:200::1"), syn("192.168.255.1"), syn("198.51.100.10"), syn("198.51.100.1")), 5, true, 3,
			[]string{"2001:db8:200::1", "192.168.255.1", "198.51.100.10", "198.51.100.1", "203.0.113.10"}, ""},
		{"carrier NAT64, public IPv4 side", hops(a("2001:db8:1::1"), a("2001:db8:1::64"), syn("192.0.2.1")), 4, true, 2,
			[]string{"2001:db8:1::1", "2001:db8:1::64", "192.0.2.1", "203.0.113.10"}, ""},
		{"silent before the translator", hops(none, syn("192.168.255.1"), syn("198.51.100.1")), 4, true, 2,
			[]string{"*", "192.168.255.1", "198.51.100.1", "203.0.113.10"}, ""},
		{"silent where the boundary lies", hops(a("2001:db8:200::1"), syn("192.168.255.1"), none, syn("198.51.100.1")), 5, true, 0, nil, "hop 3 sent no ICMP error"},
		{"nothing from beyond the translator", hops(a("2001:db8:200::1")), 0, false, 0, nil, "no hop answered from beyond the NAT64"},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := readTrace64(c.hops, c.end, c.reached, srv, pub, p)
			if c.wantReason != "" {
				if !strings.Contains(o.reason, c.wantReason) {
					t.Fatalf("reason %q, want %q", o.reason, c.wantReason)
				}
				return
			}
			if o.reason != "" || o.depth != c.want || !slices.Equal(o.hops, c.wantHops) {
				t.Fatalf("depth %d hops %v reason %q, want %d %v", o.depth, o.hops, o.reason, c.want, c.wantHops)
			}
		})
	}
}
