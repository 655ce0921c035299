package natclass_test

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/pion/transport/v4/stdnet"

	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/server"
)

func freePort(t *testing.T) uint16 {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return uint16(c.LocalAddr().(*net.UDPAddr).AddrPort().Port())
}

// TestTCPProfileLoopback: against natlab serve on loopback (no NAT, no
// filter) the TCP profile is endpoint-independent both ways and keeps
// ports; every connect-back arrived.
func TestTCPProfileLoopback(t *testing.T) {
	n, err := stdnet.NewNet()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.Listen(n, server.Config{Addrs: server.Addrs{
		Primary: netip.MustParseAddrPort("127.0.0.1:0"), AltIP: netip.MustParseAddr("127.0.0.2"), AltPort: freePort(t)}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	p, err := natclass.Discover(context.Background(), natclass.Options{Net: n, Servers: []string{srv.Addrs().Primary.String()}})
	if err != nil {
		t.Fatal(err)
	}
	tp := p.TCP
	if tp == nil {
		t.Fatal("no TCP profile")
	}
	if tp.Reached != natclass.Yes || tp.Mapping != natclass.EndpointIndependent || tp.Filtering != natclass.EndpointIndependent || len(tp.NotRun) != 0 {
		t.Errorf("TCP profile %+v, want reached, EIM, EIF, nothing not run", *tp)
	}
	if tp.PortAllocation == nil || tp.PortAllocation.Pattern != natclass.Preserving {
		t.Errorf("TCP port allocation %+v, want preserving", tp.PortAllocation)
	}
	if tp.MappedAddress != tp.LocalAddress || !strings.HasPrefix(tp.MappedAddress, "127.0.0.1:") {
		t.Errorf("mapped %s, local %s: want the same loopback address", tp.MappedAddress, tp.LocalAddress)
	}
	if !tp.Known() {
		t.Error("Known() is false for a complete profile")
	}
}

// TestTCPProfileNotServed: a server without TCP gives not_run with the
// reason, and reached stays null; NoTCP leaves no TCP profile at all.
func TestTCPProfileNotServed(t *testing.T) {
	n, err := stdnet.NewNet()
	if err != nil {
		t.Fatal(err)
	}
	// A UDP-only STUN server: natlab serve's UDP side alone is enough,
	// with nothing listening on its TCP port.
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	h := server.NewHandler(server.Addrs{Primary: c.LocalAddr().(*net.UDPAddr).AddrPort()}, "")
	go func() {
		buf := make([]byte, 1500)
		for {
			k, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			rep := h.Handle(buf[:k], from.(*net.UDPAddr).AddrPort(), c.LocalAddr().(*net.UDPAddr).AddrPort())
			if rep.Raw != nil {
				_, _ = c.WriteTo(rep.Raw, net.UDPAddrFromAddrPort(rep.To))
			}
		}
	}()
	addr := c.LocalAddr().String()
	p, err := natclass.Discover(context.Background(), natclass.Options{Net: n, Servers: []string{addr}})
	if err != nil {
		t.Fatal(err)
	}
	if p.TCP == nil || p.TCP.Reached != natclass.NotChecked || len(p.TCP.NotRun) != 3 || !strings.Contains(p.TCP.NotRun[0].Reason, "refused TCP") {
		t.Errorf("TCP profile %+v, want not run: refused", p.TCP)
	}
	if p.TCP.Known() {
		t.Error("Known() for a profile without measurements")
	}
	p, err = natclass.Discover(context.Background(), natclass.Options{Net: n, Servers: []string{addr}, NoTCP: true})
	if err != nil {
		t.Fatal(err)
	}
	if p.TCP != nil {
		t.Errorf("NoTCP: TCP profile %+v", p.TCP)
	}
}

// TestTCPProfileNoTCPStack: a network stack without TCP (pion's vnet)
// gives not_run with the stack's reason.
func TestTCPProfileNoTCPStack(t *testing.T) {
	lab, srv := startVnet(t, natclass.EndpointIndependent, natclass.EndpointIndependent, 0, true)
	p, err := natclass.Discover(context.Background(), natclass.Options{Net: lab.Client, Servers: []string{srv}})
	if err != nil {
		t.Fatal(err)
	}
	if p.TCP == nil || p.TCP.Reached != natclass.NotChecked || len(p.TCP.NotRun) != 3 || !strings.Contains(p.TCP.NotRun[0].Reason, "no TCP") {
		t.Errorf("TCP profile %+v, want not run: no TCP", p.TCP)
	}
}
