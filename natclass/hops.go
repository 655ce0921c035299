package natclass

// NAT depth: a traceroute towards the primary server. One UDP socket per
// TTL (1..maxHops) sends a Binding request; routers on the way answer with
// ICMP Time Exceeded, which the kernel queues on the socket (IP_RECVERR),
// and NATs translate those errors back to us like any reply (conntrack
// RELATED). The hops in private or shared address space before the first
// public one are the NATed part of the path: their number is the NAT
// depth, and one more is the TTL that opens our own NATs but expires
// before the peer's (holepunch's opening TTL).

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/pion/stun/v3"
	"github.com/pion/transport/v4"

	"github.com/natlab/natlab/internal/stuntx"
)

// TestNATDepth is the traceroute's name in Profile.NotRun.
const TestNATDepth = "nat_depth"

// HintDoubleNAT says two or more NATs are in front of the host.
const HintDoubleNAT = "double-nat"

const (
	// maxHops is how far the trace looks for the first public hop: a
	// home router, a carrier-grade NAT and a few ISP routers numbered in
	// private space fit.
	maxHops = 6
	// hopRTTs is how many RTTs to the server the trace waits after
	// sending: errors from routers before the server come back sooner than
	// its answer, so three leave room for their slow-path ICMP.
	hopRTTs = 3
	// minHopWait is the floor of that wait: routers send ICMP from their
	// slow path, and on a LAN the RTT is below the scheduler's jitter.
	minHopWait = 200 * time.Millisecond
	// minOpeningTTL: an opening packet must at least pass the first
	// router, which may be a stateful firewall that has to see it even
	// when it translates nothing.
	minOpeningTTL = 2
	// silentHop stands for a hop that sent no ICMP error in Profile.Hops.
	silentHop = "*"
)

// ICMP types the trace understands (RFC 792), and their ICMPv6
// counterparts (RFC 4443), which the readers translate to them.
const (
	icmpTypeDestUnreachable  = 3
	icmpTypeTimeExceeded     = 11
	icmp6TypeDestUnreachable = 1
	icmp6TypeTimeExceeded    = 3
)

// errNoKernelSocket means the socket is not a kernel socket (a lab's
// emulated network): the ICMP errors the trace needs do not exist there.
var errNoKernelSocket = errors.New("the socket is not a kernel socket, so no ICMP errors reach it")

// hopEvent is something that arrived on the socket of one TTL.
type hopEvent struct {
	ttl      int
	from     netip.Addr // the router that sent the ICMP error, or the answering server
	icmp     bool       // an ICMP error from the error queue, else a datagram
	icmpType uint8
	payload  []byte // the datagram, or the part of our request the ICMP error quotes
}

// OpeningTTL is the IP TTL for hole punching's opening packets: one more
// than the NAT depth, so they pass every NAT in front of this host and
// expire at the first router beyond, and at least 2 (a host without NAT
// may still sit behind a stateful firewall the packet has to pass). It is
// 0 when the depth was not measured: the caller keeps its default.
func (p *Profile) OpeningTTL() int {
	if p == nil || p.NATDepth == nil {
		return 0
	}
	return max(*p.NATDepth+1, minOpeningTTL)
}

// hopsOutcome is the trace's contribution to the profile.
type hopsOutcome struct {
	depth  int
	hops   []string
	reason string // why the depth is not measured; "" when it is
	// nat64: the trace crossed a NAT64, so the depth counts the IPv6
	// routers before it too, and says nothing of how many NATs there are.
	nat64 bool
}

// addHops fills the profile's NAT depth, hops, hints and not_run.
func (p *Profile) addHops(o hopsOutcome) {
	p.Hops = o.hops
	if o.reason != "" {
		p.NotRun = append(p.NotRun, NotRun{Test: TestNATDepth, Reason: o.reason})
	} else {
		depth := o.depth
		p.NATDepth = &depth
		if depth >= 2 && !o.nat64 && !slices.Contains(p.Hints, HintDoubleNAT) {
			p.Hints = append(p.Hints, HintDoubleNAT)
		}
	}
	for _, h := range o.hops {
		if a, err := netip.ParseAddr(h); err == nil && cgnatPrefix.Contains(a) && !slices.Contains(p.Hints, HintCGNAT) {
			p.Hints = append(p.Hints, HintCGNAT)
		}
	}
}

// startHops opens the trace's sockets and sends its requests, then
// gathers the answers aside; the returned function waits for the outcome
// (at most the trace's wait after sending) and has released everything
// when it returns. nat is whether our address is translated, mapped our
// address as the server saw it.
func (d *discovery) startHops(ctx context.Context, nat bool, mapped netip.Addr) func() hopsOutcome {
	t, err := newTrace(d.opts.Net, d.primary, max(hopRTTs*d.rtt, minHopWait))
	if err != nil {
		d.log.Debug("hops", "err", err)
		o := hopsOutcome{reason: err.Error()}
		return func() hopsOutcome { return o }
	}
	ch := make(chan hopsOutcome, 1)
	go func() {
		hops, end, reached := t.gather(ctx)
		var o hopsOutcome
		if p := d.opts.NAT64; p.IsValid() {
			o = readTrace64(hops, end, reached, d.primary.Addr(), mapped, p)
		} else {
			o = readTrace(hops, end, reached, d.primary.Addr(), mapped, nat)
		}
		if err := ctx.Err(); err != nil && o.reason != "" {
			o.reason = fmt.Sprintf("interrupted: %v", err)
		}
		d.log.Debug("hops", "hops", o.hops, "depth", o.depth, "reason", o.reason)
		ch <- o
	}()
	return func() hopsOutcome { return <-ch }
}

// trace is the sockets of one traceroute, conns[i] sending with TTL i+1.
type trace struct {
	to     netip.AddrPort
	wait   time.Duration
	conns  []*hopConn
	reqs   []*stun.Message
	sentAt time.Time

	events chan hopEvent
	done   chan struct{} // closed when the trace ends: readers stop emitting
	wg     sync.WaitGroup
}

// newTrace opens the trace's sockets, of to's family (IPv6: the hop
// limit stands for the TTL), and sends the first requests.
func newTrace(n transport.Net, to netip.AddrPort, wait time.Duration) (*trace, error) {
	t := &trace{to: to, wait: wait, events: make(chan hopEvent, 4*maxHops), done: make(chan struct{})}
	fam := FamilyOf(to.Addr())
	for ttl := 1; ttl <= maxHops; ttl++ {
		c, err := n.ListenPacket(fam.udp(), fam.wildcard())
		if err != nil {
			t.close()
			return nil, fmt.Errorf("open UDP socket: %w", err)
		}
		h, err := newHopConn(c, ttl, fam == IPv6)
		if err != nil {
			_ = c.Close() // never used
			t.close()
			return nil, err
		}
		t.conns = append(t.conns, h)
		m, err := stuntx.Request()
		if err != nil {
			t.close()
			return nil, err
		}
		t.reqs = append(t.reqs, m)
	}
	for i, h := range t.conns {
		t.wg.Go(func() { h.read(i+1, t.emit) })
	}
	t.sentAt = time.Now()
	for i := range t.conns {
		if err := t.send(i); err != nil {
			t.close()
			return nil, err
		}
	}
	return t, nil
}

func (t *trace) send(i int) error {
	if _, err := t.conns[i].c.WriteTo(t.reqs[i].Raw, net.UDPAddrFromAddrPort(t.to)); err != nil {
		return fmt.Errorf("send with TTL %d to %s: %w", i+1, t.to, err)
	}
	return nil
}

func (t *trace) emit(ev hopEvent) {
	select {
	case t.events <- ev:
	case <-t.done:
	}
}

// close stops the readers, closes the sockets and waits for the readers.
func (t *trace) close() {
	close(t.done)
	for _, h := range t.conns {
		_ = h.c.Close() // the only error is "already closed"
	}
	t.wg.Wait()
}

// gather collects the hops until the path to the end is complete or the
// wait is over, then closes the trace. hops[i] is the router at TTL i+1
// (invalid: silent); end is the first TTL that reached the server (reached)
// or a router that ended the path with Destination Unreachable, 0 if none.
func (t *trace) gather(ctx context.Context) (hops []netip.Addr, end int, reached bool) {
	defer t.close()
	st := &traceState{hops: make([]netip.Addr, maxHops)}
	t.collect(ctx, st, t.sentAt)
	return st.hops, st.end, st.reached
}

// traceState is what a trace has learnt so far (gather's results).
type traceState struct {
	hops    []netip.Addr
	end     int
	reached bool
}

// complete reports whether every hop up to the end answered.
func (st *traceState) complete() bool {
	return st.end > 0 && !slices.ContainsFunc(st.hops[:st.end-1], func(a netip.Addr) bool { return !a.IsValid() })
}

// collect reads answers to the requests sent at sentAt until the path is
// complete or the trace's wait after sentAt is over. Halfway it sends once
// more what is still silent, so that one lost packet does not leave a
// hole in the path.
func (t *trace) collect(ctx context.Context, st *traceState, sentAt time.Time) {
	wait := time.NewTimer(t.wait - time.Since(sentAt))
	defer wait.Stop()
	retx := time.NewTimer(t.wait/2 - time.Since(sentAt))
	defer retx.Stop()
	for !st.complete() {
		select {
		case ev := <-t.events:
			t.take(st, ev)
		case <-retx.C:
			t.resendSilent(st)
		case <-wait.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// resendSilent sends again the requests of the hops before the end that
// are still silent (best effort: the first transmission went out).
func (t *trace) resendSilent(st *traceState) {
	for i := range t.conns {
		if (st.end == 0 || i+1 < st.end) && !st.hops[i].IsValid() {
			_ = t.send(i)
		}
	}
}

// take records one answer.
func (t *trace) take(st *traceState, ev hopEvent) {
	i := ev.ttl - 1
	switch {
	case !ev.icmp:
		m := &stun.Message{Raw: ev.payload}
		if m.Decode() != nil || m.TransactionID != t.reqs[i].TransactionID || ev.from != t.to.Addr() {
			return
		}
		if st.end == 0 || ev.ttl <= st.end {
			st.end, st.reached = ev.ttl, true
		}
	case len(ev.payload) >= stun.TransactionIDSize+8 && !slices.Equal(ev.payload[8:8+stun.TransactionIDSize], t.reqs[i].TransactionID[:]):
		// Quotes another request than this socket's.
	case ev.icmpType == icmpTypeTimeExceeded:
		if !st.hops[i].IsValid() {
			st.hops[i] = ev.from
		}
	case ev.icmpType == icmpTypeDestUnreachable:
		// The server's port is closed (still the end of the path), or a
		// router gave up on the destination.
		if st.end == 0 || ev.ttl < st.end || (ev.ttl == st.end && !st.reached) {
			st.end, st.reached = ev.ttl, ev.from == t.to.Addr()
			if !st.reached {
				st.hops[i] = ev.from
			}
		}
	}
}

// insideNAT reports whether a hop's address is in the part of the network
// a NAT hides: private (RFC 1918; for IPv6 unique-local, fc00::/7, the
// LAN prefix behind NAT66 and NPTv6), shared (RFC 6598) or link-local.
func insideNAT(a netip.Addr) bool {
	return a.IsPrivate() || cgnatPrefix.Contains(a) || a.IsLinkLocalUnicast()
}

// readTrace turns a trace into the NAT depth: the number of hops up to
// the last one inside the NAT (or the NAT's own public address, mapped)
// before the first public hop or the server. Silence where the boundary
// lies, a path that never leaves private space and a translated address
// with no NAT in sight leave it unmeasured, with the reason.
func readTrace(hops []netip.Addr, end int, reached bool, server, mapped netip.Addr, nat bool) hopsOutcome {
	return readTraceFrom(hops, end, reached, server, mapped, nat, 0)
}

// readTraceFrom is readTrace where the first before hops are known to be
// inside (the IPv6 path to a NAT64, readTrace64), whatever they said.
func readTraceFrom(hops []netip.Addr, end int, reached bool, server, mapped netip.Addr, nat bool, before int) hopsOutcome {
	n := len(hops) // hops on the path before its end
	if end > 0 {
		n = end
		if reached {
			n = end - 1
		}
	}
	var o hopsOutcome
	last := n // the path as far as anything answered
	for last > 0 && !hops[last-1].IsValid() {
		last--
	}
	if end > 0 {
		last = n
	}
	for _, a := range hops[:last] {
		if a.IsValid() {
			o.hops = append(o.hops, a.String())
		} else {
			o.hops = append(o.hops, silentHop)
		}
	}
	if reached {
		o.hops = append(o.hops, server.String())
	}

	depth, silent, boundary := 0, 0, false
	for i, a := range hops[:n] {
		switch {
		case i < before:
			depth = i + 1
		case !a.IsValid():
			silent = i + 1
		case insideNAT(a) || a == mapped:
			depth = i + 1
		default:
			boundary = true
		}
		if boundary {
			break
		}
	}
	switch {
	case !nat:
		// Nothing translates our address: whatever the hops' addresses,
		// no NAT is in front of us.
		o.depth = 0
	case !boundary && !reached && end > 0:
		o.reason = fmt.Sprintf("the path ended at hop %d (destination unreachable) before leaving private address space", end)
	case !boundary && !reached:
		o.reason = fmt.Sprintf("neither a public hop nor the server within %d hops", maxHops)
	case silent > depth:
		o.reason = fmt.Sprintf("hop %d sent no ICMP error, so whether it is inside a NAT is unknown", silent)
	case !boundary && insideNAT(server) && end > 1:
		o.reason = fmt.Sprintf("the server %s is in private address space itself, so private hops prove no NAT", server)
	case depth == 0:
		o.reason = "our address is translated, yet the first hop is public: the NAT does not show in the path"
	default:
		o.depth = depth
	}
	return o
}
