package portmap_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/natlab/natlab/internal/leakcheck"
	"github.com/natlab/natlab/portmap"
	"github.com/natlab/natlab/server"
	"github.com/natlab/natlab/testnet"
)

const (
	// labStartBound bounds building a lab: the kernel backend creates
	// namespaces, nftables rules and starts miniupnpd in a second or two.
	labStartBound = 30 * time.Second
	// probeSlack is what Probe may exceed its own bound by: goroutines
	// and sockets closing after the deadline, under -race on two cores.
	probeSlack = 500 * time.Millisecond
	// arriveWait bounds the wait for a datagram that should arrive over a
	// lab link without delay; missing it is a failure, not a negative.
	arriveWait = 2 * time.Second
	// negativeWait is how long a datagram that must not arrive is waited
	// for: lab links answer in well under a millisecond.
	negativeWait = 300 * time.Millisecond
)

// The lab STUN server, on the same ports as lab.StartServer.
var stunServer = netip.AddrPortFrom(testnet.ServerAddrs[0], 3478)

const stunAltPort = 3479

// startLab builds a two-site lab with its STUN server, skipping where the
// backend cannot run here.
func startLab(t testing.TB, backend testnet.Backend, presetA, presetB string) *testnet.Lab {
	t.Helper()
	if backend == testnet.Kernel {
		if os.Geteuid() != 0 {
			t.Skip("kernel lab: needs root")
		}
		if _, err := os.Stat(testnet.MiniUPnPd); err != nil {
			t.Skipf("kernel lab with port mapping: %v (apt install miniupnpd)", err)
		}
	}
	topo, err := testnet.PairTopology(presetA, presetB)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), labStartBound)
	defer cancel()
	lab, err := testnet.Start(ctx, topo, backend)
	if errors.Is(err, testnet.ErrNeedPrivileges) || errors.Is(err, testnet.ErrNoMiniUPnPd) {
		t.Skipf("kernel lab: %v", err)
	}
	if err != nil {
		t.Fatalf("start %s lab: %v", backend, err)
	}
	srv, err := server.Listen(lab.Server.Net, server.Config{Addrs: server.Addrs{
		Primary: stunServer, AltIP: lab.Server.Addrs[1], AltPort: stunAltPort,
	}})
	if err != nil {
		_ = lab.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = srv.Close()
		if err := lab.Close(); err != nil {
			t.Errorf("close lab: %v", err)
		}
	})
	return lab
}

// gateway is the LAN address of the router in front of a site's host.
func gateway(s *testnet.Site) netip.Addr { return s.Gateway() }

// receive waits up to d for a datagram with payload want on c.
func receive(c net.PacketConn, want string, d time.Duration) (netip.AddrPort, bool) {
	defer c.SetReadDeadline(time.Time{})
	_ = c.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return netip.AddrPort{}, false
		}
		if string(buf[:n]) == want {
			ua := from.(*net.UDPAddr)
			return ua.AddrPort(), true
		}
	}
}

// sendFromServer sends payload from a fresh socket on the lab server to dst.
func sendFromServer(t testing.TB, lab *testnet.Lab, dst netip.AddrPort, payload string) {
	t.Helper()
	c, err := lab.Server.Net.ListenPacket("udp4", netip.AddrPortFrom(lab.Server.Addrs[1], 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for range 3 { // a lost datagram must not fail the test
		if _, err := c.WriteTo([]byte(payload), net.UDPAddrFromAddrPort(dst)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestProbeInProcessLabSaysNone(t *testing.T) {
	leakcheck.Check(t)
	// The in-process lab refuses +upnp (no miniupnpd there); a plain NAT
	// has no gateway that answers.
	if _, err := testnet.Start(context.Background(), mustTopo(t, "symmetric+upnp"), testnet.InProcess); !errors.Is(err, testnet.ErrNotSupported) {
		t.Errorf("in-process lab with +upnp: got %v, want ErrNotSupported", err)
	}
	lab := startLab(t, testnet.InProcess, "symmetric", "")
	a := lab.Site("a")
	for _, gw := range []netip.Addr{{}, gateway(a)} { // guessed, then given
		start := time.Now()
		r := portmap.Probe(context.Background(), portmap.Options{Net: a.Host.Net, Gateway: gw})
		took := time.Since(start)
		t.Logf("gateway %v: %s in %v: %+v", gw, r.Summary(), took.Round(time.Millisecond), r)
		if r.Any() || r.Summary() != "none" {
			t.Errorf("in-process lab: port mapping found: %+v", r)
		}
		if took > portmap.DefaultProbeTimeout+probeSlack {
			t.Errorf("Probe took %v, bound %v", took, portmap.DefaultProbeTimeout)
		}
		if len(r.Protocols) != len(portmap.Protocols) {
			t.Errorf("want one result per protocol, got %+v", r.Protocols)
		}
	}
}

func TestProbeSilentGatewayOnHost(t *testing.T) {
	leakcheck.Check(t)
	// Nothing answers NAT-PMP, PCP or SSDP on loopback here (the kernel
	// answers port unreachable).
	n := hostNet(t)
	start := time.Now()
	r := portmap.Probe(context.Background(), portmap.Options{Net: n, Gateway: netip.MustParseAddr("127.0.0.1"), Timeout: time.Second})
	took := time.Since(start)
	if r.Any() {
		t.Skipf("something on this host answers port mapping on loopback: %+v", r)
	}
	if took > time.Second+probeSlack {
		t.Errorf("Probe took %v, bound 1s", took)
	}
	for _, p := range r.Protocols {
		if p.Error == "" {
			t.Errorf("%s: unavailable without a reason", p.Protocol)
		}
	}
}

func mustTopo(t *testing.T, a string) testnet.Topology {
	t.Helper()
	topo, err := testnet.PairTopology(a, "")
	if err != nil {
		t.Fatal(err)
	}
	return topo
}
