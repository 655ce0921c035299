package holepunch

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/pion/stun/v3"
)

const (
	// ReflexiveTimeout bounds Reflexive when ctx has no earlier deadline:
	// the same 3 s natclass waits before calling UDP blocked.
	ReflexiveTimeout = 3 * time.Second
	// reflexiveRTO is the first retransmission interval; it doubles after
	// each try. 100 ms like natclass: the request is interactive and
	// duplicates cost nothing.
	reflexiveRTO = 100 * time.Millisecond
)

// Reflexive learns conn's server-reflexive address with a STUN binding
// request sent from conn itself, so the mapping is the one a punch from
// conn will use. It reads conn until the answer arrives, dropping anything
// else, and leaves conn with no read deadline.
func Reflexive(ctx context.Context, conn net.PacketConn, server netip.AddrPort) (netip.AddrPort, error) {
	ctx, cancel := context.WithTimeout(ctx, ReflexiveTimeout)
	defer cancel()
	req, err := stun.Build(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("build binding request: %w", err)
	}
	defer func() { _ = conn.SetReadDeadline(time.Time{}) }()
	dst := net.UDPAddrFromAddrPort(server)
	buf := make([]byte, readBuf)
	rto := reflexiveRTO
	for {
		if _, err := conn.WriteTo(req.Raw, dst); err != nil {
			return netip.AddrPort{}, fmt.Errorf("send binding request to %v: %w", server, err)
		}
		until := time.Now().Add(rto)
		if d, ok := ctx.Deadline(); ok && d.Before(until) {
			until = d
		}
		_ = conn.SetReadDeadline(until)
		for {
			n, _, err := conn.ReadFrom(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break
				}
				return netip.AddrPort{}, fmt.Errorf("read binding response: %w", err)
			}
			if !stun.IsMessage(buf[:n]) {
				continue
			}
			m := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
			if m.Decode() != nil || m.TransactionID != req.TransactionID || m.Type != stun.BindingSuccess {
				continue
			}
			var xor stun.XORMappedAddress
			if err := xor.GetFrom(m); err != nil {
				return netip.AddrPort{}, fmt.Errorf("binding response from %v: %w", server, err)
			}
			ip, ok := netip.AddrFromSlice(xor.IP)
			if !ok {
				return netip.AddrPort{}, fmt.Errorf("binding response from %v: bad address %v", server, xor.IP)
			}
			return netip.AddrPortFrom(ip.Unmap(), uint16(xor.Port)), nil
		}
		if err := ctx.Err(); err != nil {
			return netip.AddrPort{}, fmt.Errorf("no binding response from %v: %w", server, err)
		}
		rto *= 2
	}
}
