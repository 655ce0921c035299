package holepunch

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/natlab/natlab/internal/stuntx"
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
	req, err := stuntx.Request()
	if err != nil {
		return netip.AddrPort{}, err
	}
	a, err := stuntx.Datagram(ctx, conn, server, req, stuntx.Backoff(reflexiveRTO, ReflexiveTimeout))
	if errors.Is(err, stuntx.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) {
		return netip.AddrPort{}, fmt.Errorf("no binding response from %v: %w", server, err)
	}
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("binding request to %v: %w", server, err)
	}
	m, ok := stuntx.Mapped(a.Msg)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("binding response from %v: no mapped address", server)
	}
	return m, nil
}
