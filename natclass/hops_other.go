//go:build !linux

package natclass

import (
	"errors"
	"net"
)

// hopConn is Linux only: elsewhere the trace is not run.
type hopConn struct{ c net.PacketConn }

func newHopConn(net.PacketConn, int) (*hopConn, error) {
	return nil, errors.New("reading ICMP errors from a UDP socket (IP_RECVERR) needs Linux")
}

func (h *hopConn) read(int, func(hopEvent)) {}
