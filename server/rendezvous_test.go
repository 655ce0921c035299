package server

import (
	"bufio"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/transport/v4/stdnet"

	"github.com/natlab/natlab/internal/leakcheck"
	"github.com/natlab/natlab/rendezvous"
)

// A UDP peer hears from the socket it spoke to, even when its partner's
// message came over TCP and another client's datagram last reached a
// different socket (issue 11: replies left from the last socket used).
func TestRendezvousReplyLeavesFromPeersSocket(t *testing.T) {
	leakcheck.Check(t)
	n, err := stdnet.NewNet()
	if err != nil {
		t.Fatal(err)
	}
	rz := rendezvous.NewRegistry(nil)
	defer rz.Close()
	srv, err := Listen(n, Config{Addrs: Addrs{Primary: netip.MustParseAddrPort("127.0.0.1:0"), AltPort: freeUDPPort(t)}, Rendezvous: rz})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	a := srv.Addrs()
	alt := netip.AddrPortFrom(a.Primary.Addr(), a.AltPort)
	enc := func(m rendezvous.Message) []byte {
		b, err := rendezvous.Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	const code, tokA, tokB = "abcdefghijklmnop", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	udp, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	buf := make([]byte, 2000)
	recv := func() netip.AddrPort {
		t.Helper()
		_ = udp.SetReadDeadline(time.Now().Add(ioTimeout))
		_, from, err := udp.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		return netaddrOf(from)
	}
	_, _ = udp.WriteTo(enc(rendezvous.Message{Type: rendezvous.TypeCreate, Code: code, Token: tokA}), net.UDPAddrFromAddrPort(a.Primary))
	if from := recv(); from != a.Primary {
		t.Fatalf("wait came from %s", from)
	}
	// Another client talks to the alternate socket.
	other, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	_, _ = other.WriteTo(enc(rendezvous.Message{Type: rendezvous.TypeCreate, Code: "bcdefghijklmnopq", Token: tokA}), net.UDPAddrFromAddrPort(alt))
	_ = other.SetReadDeadline(time.Now().Add(ioTimeout))
	if _, _, err := other.ReadFrom(buf); err != nil {
		t.Fatal(err)
	}
	// The partner joins over TCP.
	c, err := net.DialTimeout("tcp4", a.Primary.String(), ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write(append(enc(rendezvous.Message{Type: rendezvous.TypeJoin, Code: code, Token: tokB}), '\n'))
	_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
	if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	if from := recv(); from != a.Primary {
		t.Errorf("the UDP peer heard of its partner from %s, want %s (the socket it spoke to)", from, a.Primary)
	}
}

func netaddrOf(a net.Addr) netip.AddrPort {
	ua := a.(*net.UDPAddr)
	ip, _ := netip.AddrFromSlice(ua.IP)
	return netip.AddrPortFrom(ip.Unmap(), uint16(ua.Port))
}
