package portmap

import (
	"fmt"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/windows"
)

// DefaultGateway reads the default IPv4 gateway from the system's routing
// table through the IP helper API (GetIpForwardTable2, what `route print`
// shows).
func DefaultGateway() (netip.Addr, error) {
	var t *windows.MibIpForwardTable2
	if err := windows.GetIpForwardTable2(windows.AF_INET, &t); err != nil {
		return netip.Addr{}, fmt.Errorf("default gateway: GetIpForwardTable2: %w", err)
	}
	defer windows.FreeMibTable(unsafe.Pointer(t))
	var routes []sysRoute
	for _, row := range t.Rows() {
		if row.Loopback != 0 || row.DestinationPrefix.Prefix.Family != windows.AF_INET || row.NextHop.Family != windows.AF_INET {
			continue
		}
		dst := (*windows.RawSockaddrInet4)(unsafe.Pointer(&row.DestinationPrefix.Prefix)).Addr
		gw := (*windows.RawSockaddrInet4)(unsafe.Pointer(&row.NextHop)).Addr
		routes = append(routes, sysRoute{
			dst:    netip.PrefixFrom(netip.AddrFrom4(dst), int(row.DestinationPrefix.PrefixLength)),
			gw:     netip.AddrFrom4(gw),
			metric: int(row.Metric),
		})
	}
	return defaultGateway(routes)
}
