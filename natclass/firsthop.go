package natclass

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/pion/transport/v4"
)

// ErrFirstHopSilent means the first router sent no ICMP error in time.
var ErrFirstHopSilent = errors.New("the first router did not answer a TTL 1 datagram")

// FirstHop sends one UDP datagram with TTL 1 (IPv6: hop limit 1) toward
// beyond and returns the router that answered with an ICMP error (Time
// Exceeded, or Destination Unreachable when it is beyond itself) and the
// round trip: the gateway's RTT, which bounds how long anything the
// gateway is asked may take. It needs Linux kernel sockets (IP_RECVERR,
// IPV6_RECVERR); elsewhere, and on emulated networks, it returns an
// error at once.
func FirstHop(ctx context.Context, n transport.Net, beyond netip.AddrPort) (netip.Addr, time.Duration, error) {
	fam := FamilyOf(beyond.Addr())
	c, err := n.ListenPacket(fam.udp(), fam.wildcard())
	if err != nil {
		return netip.Addr{}, 0, fmt.Errorf("open UDP socket: %w", err)
	}
	h, err := newHopConn(c, 1, fam == IPv6)
	if err != nil {
		_ = c.Close()
		return netip.Addr{}, 0, err
	}
	events := make(chan hopEvent, 4)
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.read(1, func(ev hopEvent) {
			select {
			case events <- ev:
			default:
			}
		})
	}()
	defer func() { _ = c.Close(); <-done }()
	start := time.Now()
	// The payload is a STUN Binding request's size; a TTL-1 packet never
	// reaches a server, so its content does not matter.
	if _, err := c.WriteTo(make([]byte, 20), net.UDPAddrFromAddrPort(beyond)); err != nil {
		return netip.Addr{}, 0, fmt.Errorf("send with TTL 1 to %s: %w", beyond, err)
	}
	for {
		select {
		case ev := <-events:
			if ev.icmp {
				return ev.from, time.Since(start), nil
			}
		case <-ctx.Done():
			return netip.Addr{}, 0, fmt.Errorf("%w: %w", ErrFirstHopSilent, ctx.Err())
		}
	}
}
