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

// hopConn is a UDP socket sending with a fixed TTL (IPv6: hop limit) and
// queueing the ICMP errors it provokes (IP_RECVERR, IPV6_RECVERR).
type hopConn struct {
	c  net.PacketConn
	rc syscall.RawConn
}

// hopSockopts are the socket options of a trace socket of one family:
// the error queue and the per-socket TTL or unicast hop limit.
func hopSockopts(v6 bool) (level, recvErr, ttl int, ttlName string) {
	if v6 {
		return unix.IPPROTO_IPV6, unix.IPV6_RECVERR, unix.IPV6_UNICAST_HOPS, "IPV6_UNICAST_HOPS"
	}
	return unix.IPPROTO_IP, unix.IP_RECVERR, unix.IP_TTL, "IP_TTL"
}

func newHopConn(c net.PacketConn, ttl int, v6 bool) (*hopConn, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, errNoKernelSocket
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errNoKernelSocket, err)
	}
	level, recvErr, ttlOpt, ttlName := hopSockopts(v6)
	var serr error
	if err := rc.Control(func(fd uintptr) {
		if err := unix.SetsockoptInt(int(fd), level, recvErr, 1); err != nil {
			serr = fmt.Errorf("setsockopt RECVERR: %w", err)
			return
		}
		if err := unix.SetsockoptInt(int(fd), level, ttlOpt, ttl); err != nil {
			serr = fmt.Errorf("setsockopt %s %d: %w", ttlName, ttl, err)
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
				switch sa := from.(type) {
				case *unix.SockaddrInet4:
					ev, got = hopEvent{from: netip.AddrFrom4(sa.Addr), payload: append([]byte(nil), buf[:n]...)}, true
				case *unix.SockaddrInet6:
					ev, got = hopEvent{from: netip.AddrFrom16(sa.Addr), payload: append([]byte(nil), buf[:n]...)}, true
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

// parseErrQueue reads an IP_RECVERR or IPV6_RECVERR message: the ICMP
// type (ICMPv6's translated to its ICMPv4 meaning) and the offender (the
// router that sent it) from sock_extended_err, and the quoted part of our
// datagram.
func parseErrQueue(payload, oob []byte) (hopEvent, bool) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return hopEvent{}, false
	}
	for _, m := range msgs {
		if len(m.Data) < sizeofSockExtendedErr+8 {
			continue
		}
		// errno u32, origin u8, type u8, code u8, pad u8, info u32,
		// data u32, then SO_EE_OFFENDER's sockaddr_in or sockaddr_in6.
		origin, typ, off := m.Data[4], m.Data[5], m.Data[sizeofSockExtendedErr:]
		ev := hopEvent{icmp: true, payload: append([]byte(nil), payload...)}
		switch {
		case m.Header.Level == unix.SOL_IP && m.Header.Type == unix.IP_RECVERR && origin == unix.SO_EE_ORIGIN_ICMP &&
			binary.NativeEndian.Uint16(off) == unix.AF_INET:
			ev.from, ev.icmpType = netip.AddrFrom4([4]byte(off[4:8])), typ
		case m.Header.Level == unix.SOL_IPV6 && m.Header.Type == unix.IPV6_RECVERR && origin == unix.SO_EE_ORIGIN_ICMP6 &&
			len(off) >= sizeofSockaddrInet6 && binary.NativeEndian.Uint16(off) == unix.AF_INET6:
			// family u16, port u16, flowinfo u32, then the address.
			ev.from, ev.icmpType = netip.AddrFrom16([16]byte(off[8:24])), icmp6Meaning(typ)
		default:
			continue // a local error (EMSGSIZE and kin), not a hop
		}
		return ev, true
	}
	return hopEvent{}, false
}

// sizeofSockaddrInet6 is sizeof(struct sockaddr_in6).
const sizeofSockaddrInet6 = 28

// icmp6Meaning maps the ICMPv6 errors the trace reads (RFC 4443) to the
// ICMPv4 types the trace speaks; any other is passed on as 0, which the
// trace ignores.
func icmp6Meaning(t uint8) uint8 {
	switch t {
	case icmp6TypeDestUnreachable: // code 4 is the server's closed port
		return icmpTypeDestUnreachable
	case icmp6TypeTimeExceeded:
		return icmpTypeTimeExceeded
	}
	return 0
}
