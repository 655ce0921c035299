package natclass

import (
	"net/netip"
	"slices"
	"strconv"
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
		retried    int // rounds sent again after the ICMP budgets refilled
		ttl        int
		want       int
		wantHops   []string
		wantReason string
	}{
		{"one router between, silent peer", hops(a("10.0.0.1"), a("198.51.100.1")), 0, false, 1, 2, 1, []string{"10.0.0.1", "198.51.100.1"}, ""},
		{"routers on one segment", hops(a("10.0.0.1")), 0, false, 1, 2, 0, []string{"10.0.0.1"}, ""},
		{"double NAT, one between", hops(a("10.0.1.1"), a("100.64.1.1"), a("198.51.100.1")), 0, false, 1, 3, 1, []string{"10.0.1.1", "100.64.1.1", "198.51.100.1"}, ""},
		{"double NAT on one segment", hops(a("10.0.1.1"), a("100.64.1.1")), 0, false, 1, 3, 0, []string{"10.0.1.1", "100.64.1.1"}, ""},
		{"peer answers, two between", hops(a("10.0.0.1"), a("198.51.100.1"), a("192.0.2.1")), 4, true, 0, 2, 2, []string{"10.0.0.1", "198.51.100.1", "192.0.2.1", "198.51.100.11"}, ""},
		{"peer answers at once", hops(a("10.0.0.1")), 2, true, 0, 2, 0, []string{"10.0.0.1", "198.51.100.11"}, ""},
		{"peer answers after a silent router", hops(a("10.0.0.1"), none), 3, true, 0, 2, 1, []string{"10.0.0.1", "*", "198.51.100.11"}, ""},
		{"a silent router between", hops(a("10.0.0.1"), none, a("192.0.2.1")), 0, false, 1, 2, 2, []string{"10.0.0.1", "*", "192.0.2.1"}, ""},
		{"a silent router between, not asked again", hops(a("10.0.0.1"), none, a("192.0.2.1")), 0, false, 0, 2, 0, []string{"10.0.0.1", "*", "192.0.2.1"}, "hop 4 stayed silent"},
		// A router out of ICMP budget right after our NAT looks like
		// routers on one segment until it is asked again after a refill:
		// without that round the count is unknown, not 0.
		{"silent after our NAT, not asked again", hops(a("10.0.0.1")), 0, false, 0, 2, 0, []string{"10.0.0.1"}, "hop 2 stayed silent"},
		{"silent after double NAT, not asked again", hops(a("10.0.1.1"), a("100.64.1.1")), 0, false, 0, 3, 0, []string{"10.0.1.1", "100.64.1.1"}, "hop 3 stayed silent"},
		// Our own second NAT silent: the answers stop short of the
		// opening TTL's reach, so nothing is known beyond it.
		{"own NAT silent", hops(a("10.0.1.1")), 0, false, 1, 3, 0, []string{"10.0.1.1"}, "up to hop 1 only, short of the opening TTL 3"},
		{"nothing answers", hops(), 0, false, 1, 2, 0, nil, "no router on the way answered"},
		{"a router gives up", hops(a("10.0.0.1"), a("198.51.100.1"), a("192.0.2.1")), 3, false, 1, 2, 1, []string{"10.0.0.1", "198.51.100.1"}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pt := peerTrace{traceState: traceState{hops: tc.hops, end: tc.end, reached: tc.reached}, retried: tc.retried}
			got := readPeerTrace(PeerPath{OpeningTTL: tc.ttl}, pt, peer)
			if !slices.Equal(got.Hops, tc.wantHops) {
				t.Errorf("hops %v, want %v", got.Hops, tc.wantHops)
			}
			if tc.wantReason != "" {
				if got.RoutersBetween != nil || !strings.Contains(got.Reason, tc.wantReason) {
					t.Errorf("got %v routers (%q), want unmeasured: %q", shown(got.RoutersBetween), got.Reason, tc.wantReason)
				}
				return
			}
			if got.RoutersBetween == nil || *got.RoutersBetween != tc.want {
				t.Errorf("routers between %v (%q), want %d", shown(got.RoutersBetween), got.Reason, tc.want)
			}
		})
	}
}

// shown is a count for a message: the number, or "unmeasured".
func shown(n *int) string {
	if n == nil {
		return "unmeasured"
	}
	return strconv.Itoa(*n)
}
