package portmap_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/transport/v4/stdnet"

	"github.com/natlab/natlab/holepunch"
	"github.com/natlab/natlab/internal/leakcheck"
	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/portmap"
	"github.com/natlab/natlab/testnet"
)

// punchBound bounds one punch: a mapped pair meets within a few round
// trips, and the unmapped attempt must run out its schedule.
const punchBound = 3 * time.Second

func hostNet(t testing.TB) *stdnet.Net {
	n, err := stdnet.NewNet()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// mappingTableEmpty checks, on the router, that miniupnpd holds no mapping:
// its UPnP table (which lists NAT-PMP and PCP mappings too) and its nft
// redirect chain.
func mappingTableEmpty(t *testing.T, ctx context.Context, c *portmap.Client, router *testnet.Host) {
	t.Helper()
	entries, err := c.UPnPEntries(ctx)
	if err != nil {
		t.Errorf("list UPnP mappings: %v", err)
	}
	if len(entries) > 0 {
		t.Errorf("mappings left on the gateway: %+v", entries)
	}
	if _, err := exec.LookPath("nft"); err != nil || router == nil {
		return
	}
	cmd, err := router.Command(ctx, "nft", "list", "chain", "inet", "miniupnpd", "prerouting_miniupnpd")
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("nft list chain: %v: %s", err, out)
	}
	if strings.Contains(string(out), "dnat") {
		t.Errorf("redirects left in miniupnpd's nft chain:\n%s", out)
	}
}

func TestKernelDetectsEachProtocol(t *testing.T) {
	leakcheck.Check(t)
	lab := startLab(t, testnet.Kernel, "symmetric+upnp", "symmetric")
	ctx := context.Background()
	a, b := lab.Site("a"), lab.Site("b")

	start := time.Now()
	r := portmap.Probe(ctx, portmap.Options{Net: a.Host.Net, Gateway: gateway(a), TestMap: true})
	t.Logf("a: %s in %v: %+v", r.Summary(), time.Since(start).Round(time.Millisecond), r)
	if r.Gateway != gateway(a) || r.Local != a.Host.Addr() {
		t.Errorf("gateway %v local %v, want %v and %v", r.Gateway, r.Local, gateway(a), a.Host.Addr())
	}
	for _, p := range r.Protocols {
		if !p.Available {
			t.Errorf("%s not detected: %s", p.Protocol, p.Error)
			continue
		}
		if p.External != a.Public {
			t.Errorf("%s: external address %v, want %v", p.Protocol, p.External, a.Public)
		}
		if p.TestMapping.Addr() != a.Public || p.TestMapping.Port() == 0 {
			t.Errorf("%s: test mapping %v, want one on %v", p.Protocol, p.TestMapping, a.Public)
		}
		if p.Error != "" {
			t.Errorf("%s: %s", p.Protocol, p.Error)
		}
	}
	if r.Protocols[2].Location == "" {
		t.Errorf("upnp: no description URL")
	}
	c, err := portmap.NewClient(portmap.Options{Net: a.Host.Net, Gateway: gateway(a)})
	if err != nil {
		t.Fatal(err)
	}
	mappingTableEmpty(t, ctx, c, a.Router)

	// Site b's router runs no miniupnpd: none, within the bound, with
	// the gateway guessed from b's interfaces.
	start = time.Now()
	r = portmap.Probe(ctx, portmap.Options{Net: b.Host.Net})
	took := time.Since(start)
	t.Logf("b: %s in %v: %+v", r.Summary(), took.Round(time.Millisecond), r)
	if r.Any() || r.Gateway != gateway(b) {
		t.Errorf("b: want none from %v, got %+v", gateway(b), r)
	}
	if took > portmap.DefaultProbeTimeout+probeSlack {
		t.Errorf("b: Probe took %v, bound %v", took, portmap.DefaultProbeTimeout)
	}
}

func TestKernelMappingAdmitsInbound(t *testing.T) {
	leakcheck.Check(t)
	lab := startLab(t, testnet.Kernel, "symmetric+upnp", "")
	ctx := context.Background()
	a := lab.Site("a")
	c, err := portmap.NewClient(portmap.Options{Net: a.Host.Net, Gateway: gateway(a)})
	if err != nil {
		t.Fatal(err)
	}

	// VerifyInbound's negative: a socket whose port is not mapped. (Its
	// own port, so that no conntrack entry left by this check meets a
	// mapping made below.)
	unmappedConn, err := a.Host.Net.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer unmappedConn.Close()
	fake := portmap.Mapping{Protocol: portmap.NATPMP,
		External: netip.AddrPortFrom(a.Public, uint16(unmappedConn.LocalAddr().(*net.UDPAddr).Port))}
	start := time.Now()
	if got, err := portmap.VerifyInbound(ctx, unmappedConn, fake, stunServer); got != natclass.No {
		t.Errorf("VerifyInbound without a mapping = %v (%v), want no", got, err)
	}
	if took := time.Since(start); took > portmap.VerifyTimeout+probeSlack {
		t.Errorf("VerifyInbound took %v, bound %v", took, portmap.VerifyTimeout)
	}

	for _, proto := range portmap.Protocols {
		t.Run(string(proto), func(t *testing.T) {
			conn, err := a.Host.Net.ListenPacket("udp4", "0.0.0.0:0")
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			port := uint16(conn.LocalAddr().(*net.UDPAddr).Port)

			// Unmapped, the symmetric NAT drops what the server sends.
			sendFromServer(t, lab, netip.AddrPortFrom(a.Public, port), "before")
			if _, ok := receive(conn, "before", negativeWait); ok {
				t.Fatalf("unsolicited datagram crossed the symmetric NAT without a mapping")
			}

			m, err := c.Map(ctx, proto, port, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			unmapped := false
			defer func() {
				if !unmapped {
					_ = c.Unmap(context.Background(), m)
				}
			}()
			t.Logf("mapped: %v", m)
			if m.External.Addr() != a.Public || m.Internal != netip.AddrPortFrom(a.Host.Addr(), port) {
				t.Errorf("mapping %v, want external on %v and internal %v:%d", m, a.Public, a.Host.Addr(), port)
			}

			sendFromServer(t, lab, m.External, "hello")
			if from, ok := receive(conn, "hello", arriveWait); !ok {
				t.Errorf("datagram from the server to %v did not arrive", m.External)
			} else {
				t.Logf("arrived from %v", from)
			}
			got, err := portmap.VerifyInbound(ctx, conn, m, stunServer)
			if got != natclass.Yes {
				t.Errorf("VerifyInbound = %v (%v), want yes", got, err)
			}

			if err := c.Unmap(ctx, m); err != nil {
				t.Fatal(err)
			}
			unmapped = true
			// A new flow no longer gets in. (The server's flows from the
			// checks above do, until conntrack forgets them: deleting a
			// redirect does not flush conntrack, here or on real CPE.)
			sendFromServer(t, lab, m.External, "after")
			if _, ok := receive(conn, "after", negativeWait); ok {
				t.Errorf("datagram still arrives after Unmap")
			}
		})
	}
	mappingTableEmpty(t, ctx, c, a.Router)
}

// punch runs PunchUDP on both sides at once and returns both results,
// closing any path.
func punch(ctx context.Context, connA, connB net.PacketConn, candsForA, candsForB []holepunch.Candidate) (ra, rb holepunch.Result, errA, errB error) {
	sess, err := holepunch.NewSession()
	if err != nil {
		panic(err)
	}
	var wg sync.WaitGroup
	var pa, pb *holepunch.Path
	wg.Go(func() {
		pa, ra, errA = holepunch.PunchUDP(ctx, holepunch.Config{Conn: connA, Session: sess, Remote: candsForA,
			Timeout: punchBound, OpeningTTL: holepunch.DefaultOpeningTTL})
	})
	wg.Go(func() {
		pb, rb, errB = holepunch.PunchUDP(ctx, holepunch.Config{Conn: connB, Session: sess.Peer(), Remote: candsForB,
			Timeout: punchBound, OpeningTTL: holepunch.DefaultOpeningTTL})
	})
	wg.Wait()
	for _, p := range []*holepunch.Path{pa, pb} {
		if p != nil {
			_ = p.Close()
		}
	}
	return
}

// srflxConn opens a socket on h and learns its server-reflexive address.
func srflxConn(t *testing.T, ctx context.Context, h *testnet.Host) (net.PacketConn, netip.AddrPort) {
	t.Helper()
	c, err := h.Net.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := holepunch.Reflexive(ctx, c, stunServer)
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	return c, s
}

func TestKernelSymmetricPairDirectWithMapping(t *testing.T) {
	leakcheck.Check(t)
	lab := startLab(t, testnet.Kernel, "symmetric+upnp", "symmetric")
	ctx := context.Background()
	a, b := lab.Site("a"), lab.Site("b")

	// Without the mapping: both NATs pick a new random port per
	// destination and filter by address and port, so no punch works.
	ca, sa := srflxConn(t, ctx, a.Host)
	cb, sb := srflxConn(t, ctx, b.Host)
	start := time.Now()
	ra, rb, errA, errB := punch(ctx, ca, cb,
		[]holepunch.Candidate{{Kind: holepunch.Srflx, Addr: sb}},
		[]holepunch.Candidate{{Kind: holepunch.Srflx, Addr: sa}})
	t.Logf("unmapped: %v / %v in %v", errA, errB, time.Since(start).Round(time.Millisecond))
	if ra.Success || rb.Success {
		t.Fatalf("symmetric × symmetric punched without a mapping: %+v %+v", ra, rb)
	}

	// With a mapping on A: B probes A's mapped address, which admits B's
	// fresh random port; A answers peer-reflexive.
	conn, m, cleanup, err := portmap.OpenMapped(ctx, a.Host.Net, gateway(a), portmap.DefaultLifetime)
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	t.Logf("a mapped over %v", m)
	cb, sb = srflxConn(t, ctx, b.Host)
	start = time.Now()
	ra, rb, errA, errB = punch(ctx, conn, cb,
		[]holepunch.Candidate{{Kind: holepunch.Srflx, Addr: sb}},
		[]holepunch.Candidate{{Kind: holepunch.Srflx, Addr: m.External}})
	t.Logf("mapped: a %v→%v err %v, b %v→%v err %v, in %v", ra.Local, ra.Remote, errA, rb.Local, rb.Remote, errB, time.Since(start).Round(time.Millisecond))
	if !ra.Success || !rb.Success {
		t.Fatalf("mapped punch failed: %v / %v", errA, errB)
	}
	if rb.Remote != m.External {
		t.Errorf("b reached a at %v, want the mapping %v", rb.Remote, m.External)
	}
	cleanup()
	c, err := portmap.NewClient(portmap.Options{Net: a.Host.Net, Gateway: gateway(a)})
	if err != nil {
		t.Fatal(err)
	}
	mappingTableEmpty(t, ctx, c, a.Router)
}

func TestKernelLabWithoutMiniupnpdBinary(t *testing.T) {
	old := testnet.MiniUPnPd
	testnet.MiniUPnPd = "/nonexistent/miniupnpd"
	t.Cleanup(func() { testnet.MiniUPnPd = old })
	t.Setenv("PATH", t.TempDir()) // nor on $PATH
	topo, err := testnet.PairTopology("symmetric+upnp", "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = testnet.Start(context.Background(), topo, testnet.Kernel)
	if !errors.Is(err, testnet.ErrNoMiniUPnPd) {
		t.Errorf("Start = %v, want ErrNoMiniUPnPd", err)
	}
}

func TestKernelCheck(t *testing.T) {
	leakcheck.Check(t)
	lab := startLab(t, testnet.Kernel, "symmetric+upnp", "double-nat+upnp")
	ctx := context.Background()
	a, b := lab.Site("a"), lab.Site("b")

	start := time.Now()
	r := portmap.Check(ctx, portmap.Options{Net: a.Host.Net, Gateway: gateway(a)}, stunServer)
	t.Logf("a: %s, inbound %+v, in %v", r.Summary(), r.Inbound, time.Since(start).Round(time.Millisecond))
	if r.Inbound == nil || r.Inbound.Admitted != natclass.Yes || r.Inbound.External.Addr() != a.Public {
		t.Errorf("a: want a mapping on %v that admits traffic, got %+v", a.Public, r.Inbound)
	}

	// B's home router speaks every protocol, but it sits behind a
	// carrier-grade NAT: its mappings are on 100.64.1.2, out of reach.
	r = portmap.Check(ctx, portmap.Options{Net: b.Host.Net, Gateway: gateway(b)}, stunServer)
	t.Logf("b: %s, inbound %+v", r.Summary(), r.Inbound)
	if !r.Any() || r.Inbound == nil || r.Inbound.Admitted != natclass.No {
		t.Errorf("b: want port mapping found but not admitting traffic, got %+v", r)
	}
	for _, s := range []*testnet.Site{a, b} {
		c, err := portmap.NewClient(portmap.Options{Net: s.Host.Net, Gateway: gateway(s)})
		if err != nil {
			t.Fatal(err)
		}
		router := s.Router
		if s.Spec.NAT.Inner != nil {
			router = nil // miniupnpd runs on the home router, which Site does not expose
		}
		mappingTableEmpty(t, ctx, c, router)
	}
}

// A router without a port-mapping daemon answers ICMP port unreachable to
// its LAN: every protocol is "not offered" from that answer, not from a
// timeout.
func TestKernelRefusingGatewaySaysNotOffered(t *testing.T) {
	leakcheck.Check(t)
	lab := startLab(t, testnet.Kernel, "port-restricted-cone", "")
	a := lab.Site("a")
	r := portmap.Probe(context.Background(), portmap.Options{Net: a.Host.Net, Gateway: gateway(a), Beyond: stunServer})
	t.Logf("%s in %v ms: %+v", r.Summary(), r.DurationMillis, r.Protocols)
	for _, p := range r.Protocols {
		if p.Available || !strings.Contains(p.Error, "port unreachable") {
			t.Errorf("%s: want not offered (port unreachable), got available=%v %q", p.Protocol, p.Available, p.Error)
		}
	}
}

// A router whose firewall drops port-mapping requests silently: the wait
// ends after a few of the gateway's round trips (measured with a TTL-1
// datagram toward the server, which the router answers Time Exceeded),
// not after the fixed probe timeout.
func TestKernelSilentGatewayBoundedByItsRTT(t *testing.T) {
	leakcheck.Check(t)
	lab := startLab(t, testnet.Kernel, "port-restricted-cone", "")
	a := lab.Site("a")
	ctx := context.Background()
	cmd, err := a.Router.Command(ctx, "nft", "add table inet silent; add chain inet silent in { type filter hook input priority -10; }; add rule inet silent in udp dport { 1900, 5351 } drop")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Skipf("nft in the router namespace: %v: %s", err, out)
	}
	r := portmap.Probe(ctx, portmap.Options{Net: a.Host.Net, Gateway: gateway(a), Beyond: stunServer})
	t.Logf("%s in %v ms: %+v", r.Summary(), r.DurationMillis, r.Protocols)
	for _, p := range r.Protocols {
		if p.Available || !strings.Contains(p.Error, "round trips to the ") {
			t.Errorf("%s: want silence bounded by the gateway's RTT, got available=%v %q", p.Protocol, p.Available, p.Error)
		}
	}
}
