//go:build linux

package natclass_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/natlab/natlab/internal/labtest"
	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/testnet"
)

// TestTracePeerKernel counts the routers between two kernel-lab NATs: one
// (the internet router) on the routed topology, none when the routers
// share a segment, from a home NAT and from behind a double NAT.
func TestTracePeerKernel(t *testing.T) {
	for _, seg := range testnet.Segments() {
		t.Run(string(seg), func(t *testing.T) {
			top, err := testnet.PairTopology("double-nat", "port-restricted-cone")
			if err != nil {
				t.Fatal(err)
			}
			top.Segment = seg
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			lab := labtest.Kernel(t, ctx, top)
			want := 1
			if seg == testnet.Shared {
				want = 0
			}
			for _, tc := range []struct {
				from, to string
				ttl      int
			}{{"a", "b", 3}, {"b", "a", 2}} {
				pp := natclass.TracePeer(ctx, lab.Site(tc.from).Host.Net, lab.Site(tc.to).Public, tc.ttl, time.Millisecond)
				t.Logf("%s → %s: %+v", tc.from, tc.to, pp)
				if pp.RoutersBetween == nil || *pp.RoutersBetween != want {
					t.Errorf("%s → %s: routers between %v (%s), want %d", tc.from, tc.to, pp.RoutersBetween, pp.Reason, want)
				}
			}
		})
	}
}

// TestTracePeerKernelIPv6 traces with hop limits toward each IPv6 site's
// public address from every other one. Toward a NAT66 site, whose
// public address is its router's own, the count is the IPv4 one: none on
// the shared segment, the internet router on the routed topology. Toward
// a site whose host keeps a global address (firewall, open, NPTv6) the
// peer's router forwards, so it is one more router between: the opening
// packet expires there before the router's conntrack keeps it.
func TestTracePeerKernelIPv6(t *testing.T) {
	presets := []string{"nat66", "ipv6-firewall", "nptv6", "ipv6-open"}
	for _, seg := range testnet.Segments() {
		t.Run(string(seg), func(t *testing.T) {
			top, err := testnet.IPv6Topology(presets...)
			if err != nil {
				t.Fatal(err)
			}
			top.Segment = seg
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			lab := labtest.Kernel(t, ctx, top)
			base := 1
			if seg == testnet.Shared {
				base = 0
			}
			// Each trace waits out a refill of the routers' ICMP budget
			// (its silent end): all twelve run at once.
			var wg sync.WaitGroup
			for i, from := range lab.Sites {
				for j, to := range lab.Sites {
					if i == j {
						continue
					}
					want := base
					if presets[j] != "nat66" {
						want++
					}
					wg.Go(func() {
						pp := natclass.TracePeer(ctx, from.Host.Net, to.Public6, 2, time.Millisecond)
						t.Logf("%s → %s (%s): hops %v, routers between %v %s", presets[i], presets[j], to.Public6, pp.Hops, deref(pp.RoutersBetween), pp.Reason)
						if pp.RoutersBetween == nil || *pp.RoutersBetween != want {
							t.Errorf("%s → %s: routers between %v (%s), want %d", presets[i], presets[j], deref(pp.RoutersBetween), pp.Reason, want)
						}
					})
				}
			}
			wg.Wait()
		})
	}
}

// deref shows a measured count, or -1 for none, in logs.
func deref(n *int) int {
	if n == nil {
		return -1
	}
	return *n
}
