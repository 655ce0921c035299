package server

import (
	"net"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// batchConn is recvmmsg/sendmmsg on a kernel UDP socket of either family
// (one datagram per call where the platform has neither): x/net's ipv4
// and ipv6 PacketConns share one Message type.
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// newBatchConn wraps uc in its own family's PacketConn.
func newBatchConn(uc *net.UDPConn) batchConn {
	if ua, ok := uc.LocalAddr().(*net.UDPAddr); ok && ua.IP.To4() == nil {
		return ipv6.NewPacketConn(uc)
	}
	return ipv4.NewPacketConn(uc)
}
