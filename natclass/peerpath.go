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
	"slices"
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

// Spaced retries. Routers rate-limit the ICMP errors they send to each
// destination; Linux from a token bucket per destination (inet_peer) that
// gains one error per net.ipv4.icmp_ratelimit (default 1000 ms; IPv6:
// net.ipv6.icmp.ratelimit, 1000 ms documented, 100 ms on newer kernels
// and shorter still toward wide prefixes) and holds six, besides a global
// icmp_msgs_per_sec budget (1000/s, burst 50). Opening packets that
// expire at a router spend its budget for our address, so a trace right
// after a pairing finds that router silent. A request sent again after a
// refill finds at least one token at a router whose budget was spent.
const (
	// icmpRefill is how long after a round the trace asks again: the
	// IPv4 default refill and a margin for the scheduler.
	icmpRefill = 1100 * time.Millisecond
	// silentRetries is how many rounds, icmpRefill apart, follow the
	// first one while the path's end is silent.
	silentRetries = 1
)

// TracePeer sends binding-shaped packets with TTL 1, 2, … (IPv6: hop
// limit) toward the peer's public address (its discard port) and counts the routers that
// answer Time Exceeded at or beyond openingTTL. The peer's router drops
// what is addressed to it at a closed port, so the path usually ends in
// silence: the trace asks again after the routers' ICMP budgets refill,
// and takes a silence that outlasts the refill, right after the hops that
// answered, for the peer's router (a router that never sends Time
// Exceeded would be taken for the peer). A silence it could not check
// leaves the count unmeasured. rtt, the round trip to the server, sizes
// the wait.
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
	pt := t.gatherPeer(ctx)
	if err := ctx.Err(); err != nil {
		pp.Reason = fmt.Sprintf("interrupted: %v", err)
		return pp
	}
	return readPeerTrace(pp, pt, peer)
}

// peerTrace is a trace toward the peer and how often it asked.
type peerTrace struct {
	traceState
	// retried is how many rounds went out icmpRefill apart after the
	// first.
	retried int
	// late[i] says hop i answered only in such a round: its router's
	// ICMP budget for us was spent.
	late []bool
}

// gatherPeer collects the trace's answers like gather, then, while the
// path's end stays silent and ctx's deadline leaves time, asks again what
// is still silent icmpRefill after each round. It closes the trace.
func (t *trace) gatherPeer(ctx context.Context) peerTrace {
	defer t.close()
	pt := peerTrace{traceState: traceState{hops: make([]netip.Addr, maxHops)}, late: make([]bool, maxHops)}
	t.collect(ctx, &pt.traceState, t.sentAt)
	for r := 1; r <= silentRetries && !pt.reached && ctx.Err() == nil; r++ {
		at := t.sentAt.Add(time.Duration(r) * icmpRefill)
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < time.Until(at)+t.wait {
			break
		}
		t.idle(ctx, &pt.traceState, at)
		before := slices.Clone(pt.hops)
		t.resendSilent(&pt.traceState)
		t.collect(ctx, &pt.traceState, time.Now())
		if ctx.Err() != nil {
			break
		}
		pt.retried = r
		for i, a := range pt.hops {
			pt.late[i] = pt.late[i] || (a.IsValid() && !before[i].IsValid())
		}
	}
	return pt
}

// idle records answers until the time comes to ask again.
func (t *trace) idle(ctx context.Context, st *traceState, until time.Time) {
	tm := time.NewTimer(time.Until(until))
	defer tm.Stop()
	for {
		select {
		case ev := <-t.events:
			t.take(st, ev)
		case <-tm.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// readPeerTrace counts the routers from the opening TTL on: up to the
// peer when it answered, else up to the last hop that sent Time Exceeded,
// when the silence after it is known to be the end: it outlasted a refill
// of the routers' ICMP budgets, and it begins beyond this host's own NATs.
func readPeerTrace(pp PeerPath, pt peerTrace, peer netip.Addr) PeerPath {
	hops, end, reached := pt.hops, pt.end, pt.reached
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
	if reason := silentEnd(pp.OpeningTTL, last, reached, pt.retried); reason != "" {
		pp.Reason = reason
		return pp
	}
	between := max(stop-pp.OpeningTTL+1, 0)
	pp.RoutersBetween = &between
	return pp
}

// silentEnd says why a trace whose end did not answer cannot tell where
// the path ends, "" when it can: the peer answered, or the silence began
// right after the opening TTL's reach or beyond (this host's own NATs all
// answered) and lasted through a round sent after the ICMP budgets
// refilled.
func silentEnd(openingTTL, last int, reached bool, retried int) string {
	switch {
	case reached:
		return ""
	case last == 0:
		return "no router on the way answered, so where the path ends is unknown"
	case last < openingTTL-1:
		return fmt.Sprintf("the routers answered up to hop %d only, short of the opening TTL %d that passes our own NATs, so what lies beyond them is unknown", last, openingTTL)
	case retried == 0:
		return fmt.Sprintf("hop %d stayed silent and there was no time to ask again after the routers' ICMP rate limit refills (%v), so whether it is the peer's router or a router out of ICMP budget is unknown", last+1, icmpRefill)
	}
	return ""
}
