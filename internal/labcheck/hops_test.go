package labcheck

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/server"
	"github.com/natlab/natlab/testnet"
)

// discoverIn starts preset's lab on backend b with natlab's server and
// checks site a. It skips when the backend cannot run here.
func discoverIn(t *testing.T, preset string, b testnet.Backend) (*natclass.Profile, *testnet.Lab) {
	t.Helper()
	topo, err := testnet.PairTopology(preset, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), labTimeout)
	defer cancel()
	lab, err := testnet.Start(ctx, topo, b)
	if errors.Is(err, testnet.ErrNeedPrivileges) || errors.Is(err, testnet.ErrNotSupported) {
		t.Skipf("%s lab unavailable: %v", b, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lab.Close() })
	addrs := server.Addrs{Primary: netip.AddrPortFrom(testnet.ServerAddrs[0], 3478), AltIP: testnet.ServerAddrs[1], AltPort: 3479}
	srv, err := server.Listen(lab.Server.Net, server.Config{Addrs: addrs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	p, err := natclass.Discover(ctx, natclass.Options{Net: lab.Site("a").Host.Net, Servers: []string{addrs.Primary.String()}})
	if err != nil {
		t.Fatal(err)
	}
	return p, lab
}

// TestNATDepthKernel traces the path from the host in real Linux NAT labs:
// one NAT per home router, two behind a carrier-grade NAT, none for a
// public host, and the opening TTL for hole punching one more (at least 2).
func TestNATDepthKernel(t *testing.T) {
	if testing.Short() {
		t.Skip("builds network namespaces")
	}
	srv := testnet.ServerAddrs[0].String()
	for _, tt := range []struct {
		preset    string
		depth     int
		hops      []string // site a is site 0
		hints     []string
		openTTL   int
		noDoubled bool
	}{
		{"port-restricted-cone", 1, []string{"10.0.0.1", "198.51.100.1", srv}, nil, 2, true},
		{"symmetric", 1, []string{"10.0.0.1", "198.51.100.1", srv}, nil, 2, true},
		{"open", 0, []string{"198.51.100.100", "198.51.100.1", srv}, nil, 2, true},
		{"double-nat", 2, []string{"10.0.0.1", "100.64.0.1", "198.51.100.1", srv}, []string{natclass.HintCGNAT, natclass.HintDoubleNAT}, 3, false},
	} {
		t.Run(tt.preset, func(t *testing.T) {
			p, _ := discoverIn(t, tt.preset, testnet.Kernel)
			for _, n := range p.NotRun {
				if n.Test == natclass.TestNATDepth {
					t.Errorf("nat_depth not run: %s", n.Reason)
				}
			}
			if p.NATDepth == nil || *p.NATDepth != tt.depth {
				t.Errorf("nat_depth %v, want %d", p.NATDepth, tt.depth)
			}
			if !slices.Equal(p.Hops, tt.hops) {
				t.Errorf("hops %q, want %q", p.Hops, tt.hops)
			}
			for _, h := range tt.hints {
				if !slices.Contains(p.Hints, h) {
					t.Errorf("hints %v lack %q", p.Hints, h)
				}
			}
			if tt.noDoubled && (slices.Contains(p.Hints, natclass.HintDoubleNAT) || slices.Contains(p.Hints, natclass.HintCGNAT)) {
				t.Errorf("hints %v: one NAT or none, nothing in 100.64.0.0/10", p.Hints)
			}
			if got := p.OpeningTTL(); got != tt.openTTL {
				t.Errorf("opening TTL %d, want %d", got, tt.openTTL)
			}
			t.Logf("%s: nat_depth %d hops %v hints %v in %.0f ms", tt.preset, *p.NATDepth, p.Hops, p.Hints, p.DurationMillis)
		})
	}
}

// TestNATDepthInProcess: the in-process lab's sockets are not kernel
// sockets, so the trace is reported as not run, at once: the check takes
// no longer than the trace's shortest wait would add.
func TestNATDepthInProcess(t *testing.T) {
	p, _ := discoverIn(t, "double-nat", testnet.InProcess)
	var nr []natclass.NotRun
	for _, n := range p.NotRun {
		if n.Test == natclass.TestNATDepth {
			nr = append(nr, n)
		}
	}
	if len(nr) != 1 || nr[0].Reason == "" {
		t.Errorf("not_run %+v, want nat_depth with a reason", p.NotRun)
	}
	if p.NATDepth != nil || p.Hops != nil || p.OpeningTTL() != 0 {
		t.Errorf("nat_depth %v hops %q opening TTL %d, want none", p.NATDepth, p.Hops, p.OpeningTTL())
	}
	if slices.Contains(p.Hints, natclass.HintDoubleNAT) {
		t.Errorf("hints %v: a depth not measured gives no double-nat hint", p.Hints)
	}
	// The failure is known before round 2 starts (natclass's loopback
	// test pins that the check does not wait for the trace); here only
	// make sure nothing waited for a timeout.
	if p.DurationMillis > float64(time.Second/time.Millisecond) {
		t.Errorf("check took %.0f ms", p.DurationMillis)
	}
	t.Logf("not_run %+v; check took %.0f ms", nr, p.DurationMillis)
}

// TestNATDepthKernelIPv6 traces over IPv6 (hop limit, IPV6_RECVERR) from
// a host behind each translating or firewalling IPv6 preset. A router
// that only filters is no NAT: depth 0 though its hop is on the path.
// NAT66 and NPTv6 answer from the unique-local LAN they hide: depth 1.
func TestNATDepthKernelIPv6(t *testing.T) {
	if testing.Short() {
		t.Skip("builds network namespaces")
	}
	presets := []string{"ipv6-firewall", "ipv6-open", "nat66", "nptv6"}
	topo, err := testnet.IPv6Topology(presets...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), labTimeout)
	defer cancel()
	lab, err := testnet.Start(ctx, topo, testnet.Kernel)
	if errors.Is(err, testnet.ErrNeedPrivileges) {
		t.Skipf("kernel lab unavailable: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer lab.Close()
	addrs := server.Addrs{Primary: netip.AddrPortFrom(testnet.ServerAddrs6[0], 3478), AltIP: testnet.ServerAddrs6[1], AltPort: 3479}
	srv, err := server.Listen(lab.Server.Net, server.Config{Addrs: addrs})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	server6 := testnet.ServerAddrs6[0].String()
	for i, tt := range []struct {
		depth int
		hops  []string // site i's LAN router, the internet router, the server
	}{
		{0, []string{"2001:db8:200::1", "2001:db8:100::1", server6}},
		{0, []string{"2001:db8:200:1::1", "2001:db8:100:1::1", server6}},
		{1, []string{"fd00:0:0:2::1", "2001:db8:100:2::1", server6}},
		{1, []string{"fd00:0:0:3::1", "2001:db8:100:3::1", server6}},
	} {
		t.Run(presets[i], func(t *testing.T) {
			site := lab.Sites[i]
			p, err := natclass.Discover(ctx, natclass.Options{Net: site.Host.Net, Servers: []string{addrs.Primary.String()}, Family: natclass.IPv6})
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range p.NotRun {
				if n.Test == natclass.TestNATDepth {
					t.Errorf("nat_depth not run: %s", n.Reason)
				}
			}
			if p.NATDepth == nil || *p.NATDepth != tt.depth || !slices.Equal(p.Hops, tt.hops) {
				t.Errorf("nat_depth %v hops %q, want %d %q", p.NATDepth, p.Hops, tt.depth, tt.hops)
			}
			if got := p.OpeningTTL(); got != 2 {
				t.Errorf("opening hop limit %d, want 2", got)
			}
			if p.NATDepth != nil {
				t.Logf("%s: %s nat_depth %d hops %v in %.0f ms", presets[i], p.Translation, *p.NATDepth, p.Hops, p.DurationMillis)
			}
		})
	}
}
