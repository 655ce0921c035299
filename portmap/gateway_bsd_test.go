//go:build darwin || freebsd || netbsd || openbsd || dragonfly

package portmap

import (
	"net/netip"
	"testing"

	"golang.org/x/net/route"
	"golang.org/x/sys/unix"
)

func TestBSDRoute(t *testing.T) {
	addrs := func(dst, gw, mask route.Addr) []route.Addr {
		as := make([]route.Addr, unix.RTAX_MAX)
		as[unix.RTAX_DST], as[unix.RTAX_GATEWAY], as[unix.RTAX_NETMASK] = dst, gw, mask
		return as
	}
	zero := &route.Inet4Addr{}
	gw := &route.Inet4Addr{IP: [4]byte{192, 168, 1, 1}}
	up := unix.RTF_UP | unix.RTF_GATEWAY
	tests := []struct {
		name string
		m    route.RouteMessage
		want string // "" when not a gateway route
	}{
		{"default with a netmask", route.RouteMessage{Flags: up, Addrs: addrs(zero, gw, zero)}, "0.0.0.0/0"},
		{"default without a netmask", route.RouteMessage{Flags: up, Addrs: addrs(zero, gw, nil)}, "0.0.0.0/0"},
		{"host route", route.RouteMessage{Flags: up, Addrs: addrs(&route.Inet4Addr{IP: [4]byte{8, 8, 8, 8}}, gw, nil)}, "8.8.8.8/32"},
		{"down", route.RouteMessage{Flags: unix.RTF_GATEWAY, Addrs: addrs(zero, gw, zero)}, ""},
		{"link gateway (on-link)", route.RouteMessage{Flags: up, Addrs: addrs(zero, &route.LinkAddr{Index: 1}, zero)}, ""},
	}
	for _, tt := range tests {
		r, ok := bsdRoute(&tt.m)
		if tt.want == "" {
			if ok {
				t.Errorf("%s: bsdRoute = %+v, want none", tt.name, r)
			}
			continue
		}
		if !ok || r.dst != netip.MustParsePrefix(tt.want) || r.gw != netip.MustParseAddr("192.168.1.1") {
			t.Errorf("%s: bsdRoute = %+v, %v; want %s via 192.168.1.1", tt.name, r, ok, tt.want)
		}
	}
}
