//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly || windows)

package portmap

import (
	"fmt"
	"net/netip"
	"runtime"
)

// DefaultGateway has no routing table to read here: callers guess the
// gateway from the interfaces (GuessGateways) or take it from a flag.
func DefaultGateway() (netip.Addr, error) {
	return netip.Addr{}, fmt.Errorf("default gateway: reading the routing table is not implemented on %s: %w", runtime.GOOS, ErrNoGateway)
}
