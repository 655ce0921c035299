package labcheck

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v3"
	"github.com/pion/transport/v4"

	"github.com/natlab/natlab/internal/interop"
	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/server"
	"github.com/natlab/natlab/testnet"
)

// readyTimeout bounds waiting for a server in the lab to answer: coturn
// starts in well under a second.
const readyTimeout = 5 * time.Second

// waitSTUN polls addr with Binding requests from n until one is answered.
func waitSTUN(n transport.Net, addr netip.AddrPort) error {
	c, err := n.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		return err
	}
	defer c.Close()
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	buf := make([]byte, 1500)
	for end := time.Now().Add(readyTimeout); time.Now().Before(end); {
		if _, err := c.WriteTo(req.Raw, net.UDPAddrFromAddrPort(addr)); err != nil {
			return err
		}
		_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if n, _, err := c.ReadFrom(buf); err == nil && stun.IsMessage(buf[:n]) {
			return nil
		}
	}
	return fmt.Errorf("no STUN answer from %s within %v", addr, readyTimeout)
}

// TestPresetsKernelInterop builds each NAT preset with real Linux NAT and
// checks that natlab, coturn's natdiscovery and the preset agree, against
// both coturn's server and natlab's.
func TestPresetsKernelInterop(t *testing.T) {
	if testing.Short() {
		t.Skip("builds network namespaces")
	}
	interop.Need(t, interop.Turnserver)
	interop.Need(t, interop.NATDiscoveryBin)
	for _, name := range []string{"open", "full-cone", "restricted-cone", "port-restricted-cone", "symmetric"} {
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
				t.Skipf("kernel lab failed to start (tested in testnet): %v", err)
			}
			defer lab.Close()
			site := lab.Site("a")
			want := site.Spec.NAT.Expect()
			run := func(h *testnet.Host) interop.Runner {
				return func(ctx context.Context, name string, args ...string) (*exec.Cmd, error) {
					return h.Command(ctx, name, args...)
				}
			}

			coturn := netip.AddrPortFrom(testnet.ServerAddrs[0], 3478)
			interop.StartCoturnOn(t, run(lab.Server), coturn, testnet.ServerAddrs[1], func() error { return waitSTUN(site.Host.Net, coturn) })
			ours := netip.AddrPortFrom(testnet.ServerAddrs[0], 3490)
			srv, err := server.Listen(lab.Server.Net, server.Config{Addrs: server.Addrs{Primary: ours, AltIP: testnet.ServerAddrs[1], AltPort: 3491}})
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()

			for _, target := range []netip.AddrPort{coturn, ours} {
				ndM, ndF, out := interop.NATDiscoveryOn(t, run(site.Host), target)
				p, err := natclass.Discover(ctx, natclass.Options{Net: site.Host.Net, Servers: []string{target.String()}})
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("server %s: natlab %s %q/%q in %.0f ms; natdiscovery %q/%q", target, p.NATType, p.Mapping, p.Filtering, p.DurationMillis, ndM, ndF)
				// Allocation and hairpinning depend on how the kernel lab
				// renders a preset; its own tests own that, so only log.
				t.Logf("  port allocation %+v (preset %q), hairpinning %v (preset %v)", p.PortAllocation, want.Allocation, p.Hairpinning, want.Hairpinning)
				if p.Mapping != ndM || p.Filtering != ndF {
					t.Errorf("server %s: natlab %q/%q, natdiscovery %q/%q\n%s", target, p.Mapping, p.Filtering, ndM, ndF, out)
				}
				if p.NATType != want.NATType || p.Mapping != want.Mapping || p.Filtering != want.Filtering {
					t.Errorf("server %s: natlab %s %q/%q, preset wants %s %q/%q", target, p.NATType, p.Mapping, p.Filtering, want.NATType, want.Mapping, want.Filtering)
				}
			}
			// The classic RFC 3489 client against natlab's server.
			if _, err := exec.LookPath(interop.StunClientBin); err == nil {
				_, out := interop.StunClientOn(t, run(site.Host), ours)
				if v := interop.StunClientVerdict(want.NATType); !strings.Contains(out, v) {
					t.Errorf("stun client against natlab's server: want %q in\n%s", v, out)
				}
			}
		})
	}
}
