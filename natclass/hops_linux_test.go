//go:build linux

package natclass

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// errCmsg builds the control message the kernel queues for an ICMP error:
// sock_extended_err followed by the offender's sockaddr.
func errCmsg(level, typ int32, origin, icmpType uint8, offender []byte) []byte {
	data := make([]byte, sizeofSockExtendedErr, sizeofSockExtendedErr+len(offender))
	data[4], data[5] = origin, icmpType
	data = append(data, offender...)
	b := make([]byte, unix.CmsgSpace(len(data)))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = level, typ
	h.SetLen(unix.CmsgLen(len(data)))
	copy(b[unix.CmsgLen(0):], data)
	return b
}

func sockaddr4(a netip.Addr) []byte {
	b := make([]byte, 16)
	binary.NativeEndian.PutUint16(b, unix.AF_INET)
	a4 := a.As4()
	copy(b[4:], a4[:])
	return b
}

func sockaddr6(a netip.Addr) []byte {
	b := make([]byte, sizeofSockaddrInet6)
	binary.NativeEndian.PutUint16(b, unix.AF_INET6)
	a16 := a.As16()
	copy(b[8:], a16[:])
	return b
}

// TestParseErrQueue reads both families' error-queue messages: the
// ICMPv6 types come out in the ICMPv4 terms the trace speaks, and
// anything not from an ICMP error (a local error, a mismatched level) is
// no hop.
func TestParseErrQueue(t *testing.T) {
	r4, r6 := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::1")
	for _, tc := range []struct {
		name     string
		oob      []byte
		ok       bool
		from     netip.Addr
		icmpType uint8
	}{
		{"ICMPv4 time exceeded", errCmsg(unix.SOL_IP, unix.IP_RECVERR, unix.SO_EE_ORIGIN_ICMP, 11, sockaddr4(r4)), true, r4, icmpTypeTimeExceeded},
		{"ICMPv4 port unreachable", errCmsg(unix.SOL_IP, unix.IP_RECVERR, unix.SO_EE_ORIGIN_ICMP, 3, sockaddr4(r4)), true, r4, icmpTypeDestUnreachable},
		{"ICMPv6 time exceeded", errCmsg(unix.SOL_IPV6, unix.IPV6_RECVERR, unix.SO_EE_ORIGIN_ICMP6, 3, sockaddr6(r6)), true, r6, icmpTypeTimeExceeded},
		{"ICMPv6 unreachable", errCmsg(unix.SOL_IPV6, unix.IPV6_RECVERR, unix.SO_EE_ORIGIN_ICMP6, 1, sockaddr6(r6)), true, r6, icmpTypeDestUnreachable},
		{"ICMPv6 packet too big", errCmsg(unix.SOL_IPV6, unix.IPV6_RECVERR, unix.SO_EE_ORIGIN_ICMP6, 2, sockaddr6(r6)), true, r6, 0},
		{"local error", errCmsg(unix.SOL_IPV6, unix.IPV6_RECVERR, unix.SO_EE_ORIGIN_LOCAL, 0, sockaddr6(r6)), false, netip.Addr{}, 0},
		{"IPv6 origin on an IPv4 level", errCmsg(unix.SOL_IP, unix.IP_RECVERR, unix.SO_EE_ORIGIN_ICMP6, 3, sockaddr6(r6)), false, netip.Addr{}, 0},
		{"truncated offender", errCmsg(unix.SOL_IPV6, unix.IPV6_RECVERR, unix.SO_EE_ORIGIN_ICMP6, 3, sockaddr6(r6)[:16]), false, netip.Addr{}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev, ok := parseErrQueue([]byte("quoted"), tc.oob)
			if ok != tc.ok || ev.from != tc.from || ev.icmpType != tc.icmpType || (ok && (!ev.icmp || string(ev.payload) != "quoted")) {
				t.Errorf("got %+v %v, want from %v type %d ok %v", ev, ok, tc.from, tc.icmpType, tc.ok)
			}
		})
	}
}
