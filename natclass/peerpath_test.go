package natclass

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestReadPeerTrace(t *testing.T) {
	a := netip.MustParseAddr
	var none netip.Addr
	peer := a("198.51.100.11")
	hops := func(as ...netip.Addr) []netip.Addr {
		h := make([]netip.Addr, maxHops)
		copy(h, as)
		return h
	}
	tests := []struct {
		name       string
		hops       []netip.Addr
		end        int
		reached    bool
		ttl        int
		want       int
		wantHops   []string
		wantReason string
	}{
		{"one router between, silent peer", hops(a("10.0.0.1"), a("198.51.100.1")), 0, false, 2, 1, []string{"10.0.0.1", "198.51.100.1"}, ""},
		{"routers on one segment", hops(a("10.0.0.1")), 0, false, 2, 0, []string{"10.0.0.1"}, ""},
		{"double NAT, one between", hops(a("10.0.1.1"), a("100.64.1.1"), a("198.51.100.1")), 0, false, 3, 1, []string{"10.0.1.1", "100.64.1.1", "198.51.100.1"}, ""},
		{"peer answers, two between", hops(a("10.0.0.1"), a("198.51.100.1"), a("192.0.2.1")), 4, true, 2, 2, []string{"10.0.0.1", "198.51.100.1", "192.0.2.1", "198.51.100.11"}, ""},
		{"peer answers at once", hops(a("10.0.0.1")), 2, true, 2, 0, []string{"10.0.0.1", "198.51.100.11"}, ""},
		{"a silent router between", hops(a("10.0.0.1"), none, a("192.0.2.1")), 0, false, 2, 2, []string{"10.0.0.1", "*", "192.0.2.1"}, ""},
		{"nothing answers", hops(), 0, false, 2, 0, nil, "no router on the way answered"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := readPeerTrace(PeerPath{OpeningTTL: tc.ttl}, tc.hops, tc.end, tc.reached, peer)
			if !slices.Equal(got.Hops, tc.wantHops) {
				t.Errorf("hops %v, want %v", got.Hops, tc.wantHops)
			}
			if tc.wantReason != "" {
				if got.RoutersBetween != nil || !strings.Contains(got.Reason, tc.wantReason) {
					t.Errorf("got %v routers (%q), want unmeasured: %q", got.RoutersBetween, got.Reason, tc.wantReason)
				}
				return
			}
			if got.RoutersBetween == nil || *got.RoutersBetween != tc.want {
				t.Errorf("routers between %v (%q), want %d", got.RoutersBetween, got.Reason, tc.want)
			}
		})
	}
}
