package natclass_test

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/natlab/natlab/internal/interop"

	"github.com/pion/transport/v4"
	"github.com/pion/transport/v4/stdnet"

	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/server"
)

func TestTranslation6(t *testing.T) {
	for _, c := range []struct{ local, mapped, want string }{
		{"[2001:db8:1::10]:4000", "[2001:db8:1::10]:4000", natclass.TranslationNone},
		// NPTv6: fd00:1::/64 → 2001:db8:1::/64, suffix and port kept.
		{"[fd00:1::10]:4000", "[2001:db8:1::10]:4000", natclass.TranslationNPTv6},
		{"[fd00:1::a:b:c:d]:4000", "[2001:db8:9:1:a:b:c:d]:4000", natclass.TranslationNPTv6},
		// Masquerade: the router's address, port kept or not.
		{"[fd00:1::10]:4000", "[2001:db8:1::1]:4000", natclass.TranslationNAT66},
		{"[fd00:1::10]:4000", "[2001:db8:1::1]:61000", natclass.TranslationNAT66},
		// Same address, other port: a port-translating firewall.
		{"[2001:db8:1::10]:4000", "[2001:db8:1::10]:4001", natclass.TranslationNAT66},
	} {
		if got := natclass.Translation6(netip.MustParseAddrPort(c.local), netip.MustParseAddrPort(c.mapped)); got != c.want {
			t.Errorf("%s seen as %s: %s, want %s", c.local, c.mapped, got, c.want)
		}
	}
}

// An IPv6 check against an IPv6 server on loopback: no translation, the
// address the server saw is ours. A family and a server of the other
// family is refused with a clear error.
func TestDiscoverIPv6Loopback(t *testing.T) {
	interop.NeedLoopback6(t)
	n, err := stdnet.NewNet()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.Listen(n, server.Config{Addrs: server.Addrs{Primary: netip.MustParseAddrPort("[::1]:0")}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ctx := context.Background()
	p, err := natclass.Discover(ctx, natclass.Options{Net: n, Servers: []string{srv.Addrs().Primary.String()}, Family: natclass.IPv6, AllocSamples: -1})
	if err != nil {
		t.Fatal(err)
	}
	if p.Family != "ipv6" || p.Translation != natclass.TranslationNone || p.MappedAddress != p.LocalAddress || !strings.HasPrefix(p.MappedAddress, "[::1]:") {
		t.Errorf("profile family %q translation %q mapped %s local %s", p.Family, p.Translation, p.MappedAddress, p.LocalAddress)
	}
	if p.TCP == nil || p.TCP.Reached != natclass.Yes {
		t.Errorf("TCP over IPv6 not reached: %+v", p.TCP)
	}
	if _, err := natclass.Discover(ctx, natclass.Options{Net: n, Servers: []string{"127.0.0.1:3478"}, Family: natclass.IPv6}); err == nil || !strings.Contains(err.Error(), "not an IPv6 address") {
		t.Errorf("IPv4 server in an IPv6 check: %v", err)
	}
	if _, err := natclass.Discover(ctx, natclass.Options{Net: n, Servers: []string{srv.Addrs().Primary.String()}}); err == nil || !strings.Contains(err.Error(), "not an IPv4 address") {
		t.Errorf("IPv6 server in an IPv4 check: %v", err)
	}
}

// noUDPNet is a host behind a firewall that passes TCP only: every UDP
// datagram it sends is dropped on the way out.
type noUDPNet struct{ transport.Net }

func (n noUDPNet) ListenPacket(network, address string) (net.PacketConn, error) {
	c, err := n.Net.ListenPacket(network, address)
	if err != nil {
		return nil, err
	}
	return dropWrites{c}, nil
}

type dropWrites struct{ net.PacketConn }

func (dropWrites) WriteTo(b []byte, _ net.Addr) (int, error) { return len(b), nil }

// An IPv6 check whose UDP is blocked (a firewall passing TCP only, the
// lab's ipv6-tcp-only) still says what happened to its address: the
// translation comes from what the server saw over TCP.
func TestDiscoverIPv6TranslationOverTCP(t *testing.T) {
	interop.NeedLoopback6(t)
	n, err := stdnet.NewNet()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.Listen(n, server.Config{Addrs: server.Addrs{Primary: netip.MustParseAddrPort("[::1]:0")}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	p, err := natclass.Discover(context.Background(), natclass.Options{Net: noUDPNet{n}, Servers: []string{srv.Addrs().Primary.String()}, Family: natclass.IPv6, AllocSamples: -1})
	if err != nil {
		t.Fatal(err)
	}
	if p.NATType != natclass.UDPBlocked || p.TCP == nil || p.TCP.Reached != natclass.Yes {
		t.Fatalf("nat_type %s, TCP %+v: want UDP blocked and TCP reached", p.NATType, p.TCP)
	}
	if p.Translation != natclass.TranslationNone || p.MappedAddress != "" || !strings.HasPrefix(p.TCP.MappedAddress, "[::1]:") {
		t.Errorf("translation %q, mapped %q, TCP mapped %q", p.Translation, p.MappedAddress, p.TCP.MappedAddress)
	}
}
