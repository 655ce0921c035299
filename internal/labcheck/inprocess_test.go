package labcheck

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/server"
	"github.com/natlab/natlab/testnet"
)

// labTimeout bounds building a lab and running one check in it.
const labTimeout = 20 * time.Second

// TestPresetsInProcess classifies every NAT preset of the lab on the
// in-process backend and compares with the preset's expected profile.
func TestPresetsInProcess(t *testing.T) {
	for _, name := range testnet.Presets() {
		t.Run(name, func(t *testing.T) {
			topo, err := testnet.PairTopology(name, "")
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), labTimeout)
			defer cancel()
			lab, err := testnet.Start(ctx, topo, testnet.InProcess)
			if errors.Is(err, testnet.ErrNotSupported) {
				t.Skipf("in-process lab not available yet: %v", err)
			}
			if err != nil {
				t.Fatal(err)
			}
			defer lab.Close()
			addrs := server.Addrs{Primary: netip.AddrPortFrom(testnet.ServerAddrs[0], 3478), AltIP: testnet.ServerAddrs[1], AltPort: 3479}
			srv, err := server.Listen(lab.Server.Net, server.Config{Addrs: addrs})
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			site := lab.Site("a")
			p, err := natclass.Discover(ctx, natclass.Options{Net: site.Host.Net, Servers: []string{addrs.Primary.String()}})
			if err != nil {
				t.Fatal(err)
			}
			want := site.Spec.NAT.Expect()
			if p.NATType != want.NATType {
				t.Errorf("nat_type %s, want %s", p.NATType, want.NATType)
			}
			if want.NATType == natclass.UDPBlocked {
				return
			}
			if p.Mapping != want.Mapping || p.Filtering != want.Filtering {
				t.Errorf("mapping/filtering %q/%q, want %q/%q", p.Mapping, p.Filtering, want.Mapping, want.Filtering)
			}
			if p.Hairpinning != want.Hairpinning {
				t.Errorf("hairpinning %v, want %v", p.Hairpinning, want.Hairpinning)
			}
			if want.Allocation != "" && (p.PortAllocation == nil || p.PortAllocation.Pattern != want.Allocation) {
				t.Errorf("port allocation %+v, want %s", p.PortAllocation, want.Allocation)
			}
			if want.Allocation == natclass.Sequential && p.PortAllocation != nil && p.PortAllocation.Step != site.Spec.NAT.Step {
				t.Errorf("step %d, want %d", p.PortAllocation.Step, site.Spec.NAT.Step)
			}
			// The host sits in the inner NAT's private LAN and sees the
			// outer public address: neither is in 100.64.0.0/10, so a
			// double NAT gives no cgnat hint. Only the carrier's handset,
			// which holds an address in the carrier's inside network, may.
			if got, want := contains(p.Hints, natclass.HintCGNAT), site.Spec.NAT.Carrier; got != want {
				t.Errorf("hints %v: cgnat %v, want %v (local address %s)", p.Hints, got, want, p.LocalAddress)
			}
			t.Logf("%s: %s in %.0f ms, not_run %v", name, p.NATType, p.DurationMillis, p.NotRun)
		})
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}
