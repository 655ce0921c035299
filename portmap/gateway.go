package portmap

// The default gateway, where port mapping is asked for. Each system keeps
// its routing table its own way (gateway_*.go); they all come down to a
// list of routes, and the choice among them is made here, once.

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// sysRoute is one IPv4 route as the system reports it.
type sysRoute struct {
	dst    netip.Prefix
	gw     netip.Addr // the next hop; invalid or unspecified when on-link
	metric int
	// scoped is a route bound to one interface (macOS's RTF_IFSCOPE):
	// each interface has its own default route, the unscoped one is the
	// system's.
	scoped bool
}

// defaultGateway picks the system's default IPv4 gateway: a route to
// 0.0.0.0/0 through a gateway, unscoped before scoped, then the lowest
// metric, then the system's order.
func defaultGateway(routes []sysRoute) (netip.Addr, error) {
	var best *sysRoute
	for i := range routes {
		r := &routes[i]
		if !r.dst.IsValid() || r.dst.Bits() != 0 || !r.dst.Addr().Is4() || !r.gw.Is4() || r.gw.IsUnspecified() {
			continue
		}
		if best == nil || better(r, best) {
			best = r
		}
	}
	if best == nil {
		return netip.Addr{}, fmt.Errorf("default gateway: %w", ErrNoGateway)
	}
	return best.gw, nil
}

func better(a, b *sysRoute) bool {
	if a.scoped != b.scoped {
		return !a.scoped
	}
	return a.metric < b.metric
}

// rtfGateway is Linux's RTF_GATEWAY: the route goes through a gateway.
const rtfGateway = 0x2

// parseRoutes reads Linux's /proc/net/route (portable, so its test runs
// everywhere).
func parseRoutes(sc *bufio.Scanner) (netip.Addr, error) {
	var routes []sysRoute
	sc.Scan() // header
	for sc.Scan() {
		if r, ok := parseRouteLine(strings.Fields(sc.Text())); ok {
			routes = append(routes, r)
		}
	}
	if err := sc.Err(); err != nil {
		return netip.Addr{}, fmt.Errorf("default gateway: %w", err)
	}
	return defaultGateway(routes)
}

// parseRouteLine reads Iface, Destination, Gateway, Flags, RefCnt, Use,
// Metric, Mask: addresses in hex, in host (little-endian) order.
func parseRouteLine(f []string) (sysRoute, bool) {
	if len(f) < 8 {
		return sysRoute{}, false
	}
	flags, err := strconv.ParseUint(f[3], 16, 32)
	if err != nil || flags&rtfGateway == 0 {
		return sysRoute{}, false
	}
	dst, ok1 := hexAddr(f[1])
	gw, ok2 := hexAddr(f[2])
	mask, ok3 := hexAddr(f[7])
	metric, err := strconv.Atoi(f[6])
	if !ok1 || !ok2 || !ok3 || err != nil {
		return sysRoute{}, false
	}
	bits := 0
	for _, b := range mask.As4() {
		bits += popcount(b)
	}
	return sysRoute{dst: netip.PrefixFrom(dst, bits), gw: gw, metric: metric}, true
}

func hexAddr(s string) (netip.Addr, bool) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 4 {
		return netip.Addr{}, false
	}
	slices.Reverse(b)
	return netip.AddrFrom4([4]byte(b)), true
}

func popcount(b byte) int {
	n := 0
	for ; b != 0; b &= b - 1 {
		n++
	}
	return n
}
