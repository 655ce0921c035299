//go:build !linux

package natclass

import (
	"fmt"
	"net"
	"runtime"
	"syscall"
)

// hopConn is Linux only: elsewhere the trace is not run, and the profile
// lists nat_depth under not_run with this reason.
type hopConn struct{ c net.PacketConn }

func newHopConn(c net.PacketConn, _ int, _ bool) (*hopConn, error) {
	if _, ok := c.(syscall.Conn); !ok {
		return nil, errNoKernelSocket // as on Linux: a lab's emulated socket
	}
	return nil, errNoHopErrors
}

// errNoHopErrors says why: the trace needs each router's ICMP Time
// Exceeded, with the router's address, on an unprivileged UDP socket.
var errNoHopErrors = fmt.Errorf("the NAT-depth trace reads ICMP errors on its UDP sockets (Linux IP_RECVERR, IPV6_RECVERR); %s has no equivalent, and raw ICMP sockets need %s",
	runtime.GOOS, map[bool]string{true: "Administrator", false: "root"}[runtime.GOOS == "windows"])

func (h *hopConn) read(int, func(hopEvent)) {}
