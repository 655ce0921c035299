//go:build linux

package natclass_test

import (
	"context"
	"errors"
	"testing"
	"time"

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
			lab, err := testnet.Start(ctx, top, testnet.Kernel)
			if errors.Is(err, testnet.ErrNeedPrivileges) {
				t.Skipf("kernel lab: %v", err)
			}
			if err != nil {
				t.Fatal(err)
			}
			defer lab.Close()
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
