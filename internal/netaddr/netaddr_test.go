package netaddr

import (
	"net"
	"net/netip"
	"testing"

	"github.com/pion/transport/v4/stdnet"
)

type strAddr string

func (s strAddr) Network() string { return "test" }
func (s strAddr) String() string  { return string(s) }

func TestAddrPort(t *testing.T) {
	want := netip.MustParseAddrPort("198.51.100.10:3478")
	tests := []struct {
		name string
		in   net.Addr
		want netip.AddrPort
	}{
		{"udp", &net.UDPAddr{IP: net.ParseIP("198.51.100.10"), Port: 3478}, want},
		{"udp mapped", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("[::ffff:198.51.100.10]:3478")), want},
		{"tcp", &net.TCPAddr{IP: net.ParseIP("198.51.100.10"), Port: 3478}, want},
		{"string", strAddr("198.51.100.10:3478"), want},
		{"garbage", strAddr("nope"), netip.AddrPort{}},
		{"nil", nil, netip.AddrPort{}},
	}
	for _, tt := range tests {
		if got := AddrPort(tt.in); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestPrefixesOnLoopback(t *testing.T) {
	n, err := stdnet.NewNet()
	if err != nil {
		t.Fatal(err)
	}
	ps := Prefixes(n)
	found := false
	for _, p := range ps {
		if !p.Addr().Is4() || !p.IsValid() {
			t.Errorf("not an IPv4 prefix: %v", p)
		}
		if p == netip.MustParsePrefix("127.0.0.1/8") {
			found = true
		}
	}
	if !found {
		t.Errorf("127.0.0.1/8 missing from %v", ps)
	}
}
