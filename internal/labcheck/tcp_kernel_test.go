package labcheck

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/server"
	"github.com/natlab/natlab/testnet"
)

// TestTCPProfileKernel: behind every preset built with real Linux NAT, the
// TCP profile natlab measures (connections from one port to natlab serve's
// four sockets; the server's connect-backs) is the preset's TCP behaviour,
// and the UDP profile still is its UDP behaviour beside it.
func TestTCPProfileKernel(t *testing.T) {
	if testing.Short() {
		t.Skip("builds network namespaces")
	}
	var total, tcpTotal time.Duration
	for _, name := range testnet.Presets() {
		t.Run(name, func(t *testing.T) {
			topo, err := testnet.PairTopology(name, "")
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), labTimeout)
			defer cancel()
			lab, err := testnet.Start(ctx, topo, testnet.Kernel)
			if errors.Is(err, testnet.ErrNeedPrivileges) || errors.Is(err, testnet.ErrNotSupported) {
				t.Skipf("kernel lab unavailable: %v", err)
			}
			if err != nil {
				t.Fatal(err)
			}
			defer lab.Close()
			primary := netip.AddrPortFrom(testnet.ServerAddrs[0], 3478)
			srv, err := server.Listen(lab.Server.Net, server.Config{Addrs: server.Addrs{Primary: primary, AltIP: testnet.ServerAddrs[1], AltPort: 3479}})
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			site := lab.Site("a")
			p, err := natclass.Discover(ctx, natclass.Options{Net: site.Host.Net, Servers: []string{primary.String()}})
			if err != nil {
				t.Fatal(err)
			}
			total += time.Duration(p.DurationMillis * float64(time.Millisecond))
			want, wantUDP := site.Spec.NAT.ExpectTCP(), site.Spec.NAT.Expect()
			tp := p.TCP
			if tp == nil {
				t.Fatal("no TCP profile")
			}
			tcpTotal += time.Duration(tp.DurationMillis * float64(time.Millisecond))
			var alloc natclass.Allocation
			if tp.PortAllocation != nil {
				alloc = tp.PortAllocation.Pattern
			}
			t.Logf("TCP %s/%s %s in %.0f ms (whole check %.0f ms); UDP %s", tp.Mapping.Abbrev("M"), tp.Filtering.Abbrev("F"), alloc, tp.DurationMillis, p.DurationMillis, p.NATType)
			if tp.Reached != natclass.Yes || tp.Mapping != want.Mapping || tp.Filtering != want.Filtering || len(tp.NotRun) != 0 {
				t.Errorf("TCP profile %+v, want reached, %s/%s", *tp, want.Mapping, want.Filtering)
			}
			if alloc != want.Allocation {
				t.Errorf("TCP port allocation %+v, want %s", tp.PortAllocation, want.Allocation)
			}
			if p.NATType != wantUDP.NATType || p.Mapping != wantUDP.Mapping || p.Filtering != wantUDP.Filtering {
				t.Errorf("UDP profile %s %s/%s, want %s %s/%s", p.NATType, p.Mapping, p.Filtering, wantUDP.NATType, wantUDP.Mapping, wantUDP.Filtering)
			}
		})
	}
	t.Logf("all presets: checks took %v, their TCP tests %v", total.Round(time.Millisecond), tcpTotal.Round(time.Millisecond))
}

// BenchmarkCheckTCPCost is what the TCP tests add to a check: from behind
// kernel-lab NATs, natclass.Discover with and without them, alternating,
// against the same natlab serve. Run it with
//
//	go test -run - -bench CheckTCPCost -benchtime 10x ./internal/labcheck/
func BenchmarkCheckTCPCost(b *testing.B) {
	for _, tc := range []struct {
		preset string
		rtt    time.Duration // to the server, added on the site's WAN link
	}{
		{"full-cone", 0}, {"port-restricted-cone", 0}, {"symmetric", 0}, {"static-port-udp", 0},
		{"full-cone", 25 * time.Millisecond}, {"port-restricted-cone", 25 * time.Millisecond},
	} {
		b.Run(fmt.Sprintf("%s/rtt=%v", tc.preset, tc.rtt), func(b *testing.B) {
			topo, err := testnet.PairTopology(tc.preset, "")
			if err != nil {
				b.Fatal(err)
			}
			topo.Sites[0].WAN.Delay = tc.rtt / 2
			ctx := context.Background()
			lab, err := testnet.Start(ctx, topo, testnet.Kernel)
			if errors.Is(err, testnet.ErrNeedPrivileges) || errors.Is(err, testnet.ErrNotSupported) {
				b.Skipf("kernel lab unavailable: %v", err)
			}
			if err != nil {
				b.Fatal(err)
			}
			defer lab.Close()
			primary := netip.AddrPortFrom(testnet.ServerAddrs[0], 3478)
			srv, err := server.Listen(lab.Server.Net, server.Config{Addrs: server.Addrs{Primary: primary, AltIP: testnet.ServerAddrs[1], AltPort: 3479}})
			if err != nil {
				b.Fatal(err)
			}
			defer srv.Close()
			var with, without, tcp time.Duration
			b.ResetTimer()
			for i := range b.N {
				// Alternate which goes first: back-to-back checks meet
				// the routers' ICMP rate limit (the NAT depth trace).
				for _, noTCP := range [][]bool{{false, true}, {true, false}}[i%2] {
					start := time.Now()
					p, err := natclass.Discover(ctx, natclass.Options{Net: lab.Site("a").Host.Net, Servers: []string{primary.String()}, NoTCP: noTCP})
					if err != nil {
						b.Fatal(err)
					}
					if d := time.Since(start); noTCP {
						without += d
					} else {
						with += d
						tcp += time.Duration(p.TCP.DurationMillis * float64(time.Millisecond))
						if !p.TCP.Known() {
							b.Fatalf("TCP profile not measured: %+v", p.TCP)
						}
					}
				}
			}
			b.ReportMetric(float64(with.Milliseconds())/float64(b.N), "ms/check-with-tcp")
			b.ReportMetric(float64(without.Milliseconds())/float64(b.N), "ms/check-udp-only")
			b.ReportMetric(float64(with-without)/float64(b.N)/float64(time.Millisecond), "ms-added")
			b.ReportMetric(float64(tcp)/float64(b.N)/float64(time.Millisecond), "ms/tcp-tests")
		})
	}
}
