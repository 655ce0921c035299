//go:build darwin || freebsd || netbsd || openbsd || dragonfly

package portmap

import (
	"fmt"
	"net/netip"

	"golang.org/x/net/route"
	"golang.org/x/sys/unix"
)

// DefaultGateway reads the default IPv4 gateway from the system's routing
// table, through the routing socket's sysctl (what `netstat -rn` reads).
func DefaultGateway() (netip.Addr, error) {
	rib, err := route.FetchRIB(unix.AF_INET, route.RIBTypeRoute, 0)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("default gateway: routing table: %w", err)
	}
	msgs, err := route.ParseRIB(route.RIBTypeRoute, rib)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("default gateway: routing table: %w", err)
	}
	var routes []sysRoute
	for _, m := range msgs {
		if rm, ok := m.(*route.RouteMessage); ok {
			if r, ok := bsdRoute(rm); ok {
				routes = append(routes, r)
			}
		}
	}
	return defaultGateway(routes)
}

// bsdRoute reads a route message: its addresses are indexed by RTAX_*, a
// missing netmask means a host route unless the destination is 0.0.0.0.
func bsdRoute(m *route.RouteMessage) (sysRoute, bool) {
	if m.Flags&unix.RTF_UP == 0 || m.Flags&unix.RTF_GATEWAY == 0 || len(m.Addrs) <= unix.RTAX_NETMASK {
		return sysRoute{}, false
	}
	dst, ok := inet4(m.Addrs[unix.RTAX_DST])
	gw, ok2 := inet4(m.Addrs[unix.RTAX_GATEWAY])
	if !ok || !ok2 {
		return sysRoute{}, false
	}
	bits := 32
	if mask, ok := inet4(m.Addrs[unix.RTAX_NETMASK]); ok {
		bits = 0
		for _, b := range mask.As4() {
			bits += popcount(b)
		}
	} else if dst.IsUnspecified() {
		bits = 0
	}
	return sysRoute{dst: netip.PrefixFrom(dst, bits), gw: gw, scoped: m.Flags&rtfIfscope != 0}, true
}

func inet4(a route.Addr) (netip.Addr, bool) {
	if a, ok := a.(*route.Inet4Addr); ok {
		return netip.AddrFrom4(a.IP), true
	}
	return netip.Addr{}, false
}
