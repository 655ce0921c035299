package server_test

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/natlab/natlab/internal/interop"

	"github.com/pion/stun/v3"
	"github.com/pion/transport/v4/stdnet"

	"github.com/natlab/natlab/internal/leakcheck"
	"github.com/natlab/natlab/relay"
	"github.com/natlab/natlab/server"
)

func startTURN6(t *testing.T) *server.Server {
	t.Helper()
	n, err := stdnet.NewNet()
	if err != nil {
		t.Fatal(err)
	}
	tc := &server.TURNConfig{Users: map[string]string{user: pass}}
	srv, err := server.Listen(n, server.Config{Addrs: server.Addrs{Primary: netip.MustParseAddrPort("[::1]:0"), AltPort: 0}, TURN: tc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return srv
}

// An IPv6 server answers Binding with an IPv6 XOR-MAPPED-ADDRESS and
// RESPONSE-ORIGIN, over UDP.
func TestBindingIPv6(t *testing.T) {
	interop.NeedLoopback6(t)
	srv := startTURN6(t)
	c, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	res := exchange(t, c, srv.Addrs().Primary, stun.MustBuild(stun.TransactionID, stun.BindingRequest))
	var xor stun.XORMappedAddress
	if err := xor.GetFrom(res); err != nil {
		t.Fatal(err)
	}
	local := c.LocalAddr().(*net.UDPAddr)
	if !xor.IP.Equal(net.IPv6loopback) || xor.Port != local.Port {
		t.Errorf("mapped %v, want [::1]:%d", xor, local.Port)
	}
	var origin stun.ResponseOrigin
	if err := origin.GetFrom(res); err != nil || !origin.IP.Equal(net.IPv6loopback) {
		t.Errorf("RESPONSE-ORIGIN %v (%v)", origin, err)
	}
}

// TURN on an IPv6 server allocates IPv6 relayed addresses, over UDP and
// TCP, and relays between them.
func TestTURNIPv6(t *testing.T) {
	interop.NeedLoopback6(t)
	leakcheck.Check(t)
	srv := startTURN6(t)
	a, b := permittedPair(t, srv, relay.UDP, relay.TCP)
	for _, r := range []netip.AddrPort{a.Relayed, b.Relayed} {
		if r.Addr() != netip.IPv6Loopback() || r.Port() == 0 {
			t.Fatalf("relayed address %v, want [::1]:port", r)
		}
	}
	buf := make([]byte, 100)
	for i := range 3 {
		if _, err := a.Conn.WriteTo([]byte("hello6"), net.UDPAddrFromAddrPort(b.Relayed)); err != nil {
			t.Fatal(err)
		}
		_ = b.Conn.SetReadDeadline(time.Now().Add(turnTestTimeout))
		n, from, err := b.Conn.ReadFrom(buf)
		if err != nil || string(buf[:n]) != "hello6" || from.String() != a.Relayed.String() {
			t.Fatalf("write %d: got %q from %v (%v)", i, buf[:n], from, err)
		}
	}
}

// RFC 6156: an Allocate asking for the family the server relays in is
// granted; one asking for the other family meets 440, an unknown family
// 400.
func TestTURNRequestedAddressFamily(t *testing.T) {
	interop.NeedLoopback6(t)
	srv4 := startTURN(t, nil)
	srv6 := startTURN6(t)
	for _, c := range []struct {
		name   string
		srv    *server.Server
		family byte
		want   int
	}{
		{"ipv4 server, ipv6 asked", srv4, 0x02, 440},
		{"ipv6 server, ipv4 asked", srv6, 0x01, 440},
		{"ipv6 server, unknown family", srv6, 0x07, 400},
		{"ipv4 server, ipv4 asked", srv4, 0x01, 0},
		{"ipv6 server, ipv6 asked", srv6, 0x02, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			to := c.srv.Addrs().Primary
			conn, err := net.ListenPacket("udp", netip.AddrPortFrom(to.Addr(), 0).String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			reqTransport := stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}}
			first := exchange(t, conn, to, stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), reqTransport, stun.Fingerprint))
			var nonce stun.Nonce
			var realm stun.Realm
			if nonce.GetFrom(first) != nil || realm.GetFrom(first) != nil {
				t.Fatalf("no 401 challenge: %v", first)
			}
			signed := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), reqTransport,
				stun.RawAttribute{Type: stun.AttrRequestedAddressFamily, Value: []byte{c.family, 0, 0, 0}},
				stun.NewUsername(user), realm, nonce, stun.NewLongTermIntegrity(user, realm.String(), pass), stun.Fingerprint)
			res := exchange(t, conn, to, signed)
			var code stun.ErrorCodeAttribute
			got := 0
			if code.GetFrom(res) == nil {
				got = int(code.Code)
			}
			if got != c.want {
				t.Fatalf("got %v (code %d), want code %d", res, got, c.want)
			}
			if c.want == 0 {
				var relayed stun.XORMappedAddress
				if err := relayed.GetFromAs(res, stun.AttrXORRelayedAddress); err != nil || (relayed.IP.To4() == nil) != (c.family == 0x02) {
					t.Errorf("relayed address %v (%v) not of family %d", relayed, err, c.family)
				}
				// Release the allocation.
				refresh := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodRefresh, stun.ClassRequest),
					stun.RawAttribute{Type: stun.AttrLifetime, Value: []byte{0, 0, 0, 0}},
					stun.NewUsername(user), realm, nonce, stun.NewLongTermIntegrity(user, realm.String(), pass), stun.Fingerprint)
				_ = exchange(t, conn, to, refresh)
			}
		})
	}
}
