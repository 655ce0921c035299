//go:build linux

package natclass

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// sizeofSockExtendedErr is sizeof(struct sock_extended_err) (unix.SockExtendedErr).
const sizeofSockExtendedErr = 16

// maxSockErrors bounds the reader's loop on unexpected recvmsg errors: a
// pending socket error is read once, so repeats mean the socket is broken.
const maxSockErrors = 8

// hopConn is a UDP socket sending with a fixed TTL and queueing the ICMP
// errors it provokes (IP_RECVERR).
type hopConn struct {
	c  net.PacketConn
	rc syscall.RawConn
}

func newHopConn(c net.PacketConn, ttl int) (*hopConn, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, errNoKernelSocket
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errNoKernelSocket, err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		if err := unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_RECVERR, 1); err != nil {
			serr = fmt.Errorf("setsockopt IP_RECVERR: %w", err)
			return
		}
		if err := unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TTL, ttl); err != nil {
			serr = fmt.Errorf("setsockopt IP_TTL %d: %w", ttl, err)
		}
	}); err != nil {
		return nil, fmt.Errorf("raw socket: %w", err)
	}
	if serr != nil {
		return nil, serr
	}
	return &hopConn{c: c, rc: rc}, nil
}

// read emits what arrives on the socket, ICMP errors from the error queue
// first, until the socket is closed. It is the socket's only reader.
func (h *hopConn) read(ttl int, emit func(hopEvent)) {
	buf := make([]byte, 1500)
	oob := make([]byte, 512)
	for errs := 0; errs < maxSockErrors; {
		var ev hopEvent
		var got bool
		err := h.rc.Read(func(fd uintptr) bool {
			n, oobn, _, _, err := unix.Recvmsg(int(fd), buf, oob, unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT)
			if err == nil {
				ev, got = parseErrQueue(buf[:n], oob[:oobn])
				return true
			}
			n, _, _, from, err := unix.Recvmsg(int(fd), buf, nil, unix.MSG_DONTWAIT)
			switch {
			case err == nil:
				if sa, ok := from.(*unix.SockaddrInet4); ok {
					ev, got = hopEvent{from: netip.AddrFrom4(sa.Addr), payload: append([]byte(nil), buf[:n]...)}, true
				}
			case errors.Is(err, unix.EAGAIN):
				return false // wait for the poller
			default:
				// The errno of a queued ICMP error, reported once
				// (EHOSTUNREACH for Time Exceeded): read again.
				errs++
			}
			return true
		})
		if err != nil {
			return // closed
		}
		if got {
			errs = 0
			ev.ttl = ttl
			emit(ev)
		}
	}
}

// parseErrQueue reads an IP_RECVERR message: the ICMP type and the
// offender (the router that sent it) from sock_extended_err, and the
// quoted part of our datagram.
func parseErrQueue(payload, oob []byte) (hopEvent, bool) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return hopEvent{}, false
	}
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_IP || m.Header.Type != unix.IP_RECVERR || len(m.Data) < sizeofSockExtendedErr+8 {
			continue
		}
		// errno u32, origin u8, type u8, code u8, pad u8, info u32,
		// data u32, then SO_EE_OFFENDER's sockaddr_in.
		if m.Data[4] != unix.SO_EE_ORIGIN_ICMP {
			continue // a local error (EMSGSIZE and kin), not a hop
		}
		off := m.Data[sizeofSockExtendedErr:]
		if binary.NativeEndian.Uint16(off) != unix.AF_INET {
			continue
		}
		return hopEvent{
			from:     netip.AddrFrom4([4]byte(off[4:8])),
			icmp:     true,
			icmpType: m.Data[5],
			payload:  append([]byte(nil), payload...),
		}, true
	}
	return hopEvent{}, false
}
