package portmap

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
)

// routeFile is the kernel's IPv4 routing table of this process's network
// namespace.
const routeFile = "/proc/net/route"

// DefaultGateway reads the default IPv4 gateway from the system's routing
// table (here /proc/net/route, this process's network namespace). A lab
// host is in another namespace: pass its router's LAN address instead.
func DefaultGateway() (netip.Addr, error) {
	f, err := os.Open(routeFile)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("default gateway: %w", err)
	}
	defer f.Close()
	return parseRoutes(bufio.NewScanner(f))
}
