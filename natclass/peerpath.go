package natclass

// The path between two NATs. A hole punch's opening packets carry a low
// TTL so that they pass this host's own NATs and expire before the peer's
// router (the conntrack trap, README "natlab probe"). That works only if some router lies
// between: when both NATs sit on one segment (one switch, one building
// LAN), a packet addressed to the peer's router is delivered there
// whatever its TTL. TracePeer counts those routers with TTL-limited
// packets toward the peer's public address, as the NAT-depth trace does
// toward the server.

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/pion/transport/v4"
)

// discardPort is where the trace's packets go: the peer's router has no
// reason to forward or answer anything there (RFC 863).
const discardPort = 9

// PeerPath is what a trace toward the peer's public address found.
type PeerPath struct {
	// RoutersBetween is how many routers lie between the reach of this
	// host's opening TTL and the peer's public address; nil when not
	// measured (then Reason says why).
	RoutersBetween *int `json:"routers_between,omitempty"`
	// OpeningTTL is the TTL that passes this host's own NATs.
	OpeningTTL int `json:"opening_ttl"`
	// Hops are the routers toward the peer ("*": silent), the peer last
	// if it answered.
	Hops   []string `json:"hops,omitempty"`
	Reason string   `json:"reason,omitempty"`
}

// TracePeer sends binding-shaped packets with TTL 1, 2, … (IPv6: hop
// limit) toward the peer's public address (its discard port) and counts the routers that
// answer Time Exceeded at or beyond openingTTL. A silent end is taken to
// be the peer's router (routers drop what is addressed to them at closed
// ports; a router that also never sends Time Exceeded would be counted as
// the peer). rtt, the round trip to the server, sizes the wait.
func TracePeer(ctx context.Context, n transport.Net, peer netip.Addr, openingTTL int, rtt time.Duration) PeerPath {
	openingTTL = max(openingTTL, minOpeningTTL)
	pp := PeerPath{OpeningTTL: openingTTL}
	if !peer.IsValid() {
		pp.Reason = "no peer address to trace toward"
		return pp
	}
	t, err := newTrace(n, netip.AddrPortFrom(peer, discardPort), max(hopRTTs*rtt, minHopWait))
	if err != nil {
		pp.Reason = err.Error()
		return pp
	}
	hops, end, reached := t.gather(ctx)
	if err := ctx.Err(); err != nil {
		pp.Reason = fmt.Sprintf("interrupted: %v", err)
		return pp
	}
	return readPeerTrace(pp, hops, end, reached, peer)
}

// readPeerTrace counts the routers from the opening TTL on: up to the
// peer when it answered, else up to the last hop that sent Time Exceeded.
func readPeerTrace(pp PeerPath, hops []netip.Addr, end int, reached bool, peer netip.Addr) PeerPath {
	last := 0 // the highest TTL whose packet expired at a router
	for i, a := range hops {
		if a.IsValid() && a != peer && (end == 0 || i+1 < end) {
			last = i + 1
		}
	}
	stop := last
	if end > 0 && reached {
		stop = end - 1
	}
	for i := range stop {
		if hops[i].IsValid() {
			pp.Hops = append(pp.Hops, hops[i].String())
		} else {
			pp.Hops = append(pp.Hops, silentHop)
		}
	}
	if reached {
		pp.Hops = append(pp.Hops, peer.String())
	}
	if last == 0 && !reached {
		pp.Reason = "no router on the way answered, so where the path ends is unknown"
		return pp
	}
	between := max(stop-pp.OpeningTTL+1, 0)
	pp.RoutersBetween = &between
	return pp
}
