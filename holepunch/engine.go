package holepunch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/natlab/natlab/internal/netaddr"
)

const (
	// idleTick paces probes on peer-reflexive and confirmed pairs once the
	// plan has run out: the retry interval cap, for the same reason.
	idleTick = defaultMaxInterval
	// maxReadErrors ends a socket's reader after this many consecutive
	// non-timeout errors, so a broken socket cannot spin a core.
	maxReadErrors = 100
	// readBuf holds any datagram a probe could be; larger ones are not ours.
	readBuf = 1500
)

// pair is one (local socket, remote address) the engine probes.
type pair struct {
	sock   int
	remote netip.AddrPort
	kind   Kind
}

// step is one entry of a send plan: at time at, probe these pairs.
type step struct {
	at      time.Duration
	targets []pair
	lowTTL  bool // send with the opening TTL (see Config.OpeningTTL)
}

// plan returns step i, or ok=false when the plan is exhausted. It is
// called from the engine's goroutine only.
type plan func(i int) (s step, ok bool)

type inbound struct {
	sock int
	from netip.AddrPort
	p    probe
	at   time.Time
}

type sentPing struct {
	pair
	at time.Time
}

// engine runs the authenticated ping/pong exchange over a set of sockets.
// All state but the readers belongs to the goroutine that calls run.
type engine struct {
	sess       Session
	conns      []net.PacketConn
	openingTTL int
	log        *slog.Logger

	in   chan inbound
	quit chan struct{}
	stop atomic.Bool
	wg   sync.WaitGroup

	start         time.Time
	pending       map[nonce]sentPing
	prflx         map[pair]bool
	attempts      int
	firstPacket   time.Duration
	got           *pair // the pair whose pong confirmed our direction
	gotKind       Kind  // the kind of the candidate that was pinged
	rtt           time.Duration
	mapped        netip.AddrPort
	peerConfirmed bool
	buf           []byte
}

func newEngine(sess Session, conns []net.PacketConn, openingTTL int, log *slog.Logger) *engine {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &engine{
		sess: sess, conns: conns, openingTTL: openingTTL, log: log,
		in: make(chan inbound, 64), quit: make(chan struct{}),
		pending: map[nonce]sentPing{}, prflx: map[pair]bool{},
		firstPacket: -1,
	}
}

func (e *engine) startReaders() {
	for i, c := range e.conns {
		e.wg.Add(1)
		go e.read(i, c)
	}
}

func (e *engine) read(i int, c net.PacketConn) {
	defer e.wg.Done()
	buf := make([]byte, readBuf)
	errs := 0
	for {
		n, addr, err := c.ReadFrom(buf)
		if err != nil {
			if e.stop.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			if errs++; errs > maxReadErrors {
				e.log.Debug("reader gives up", "sock", i, "err", err)
				return
			}
			continue
		}
		errs = 0
		p, err := e.sess.unmarshal(buf[:n])
		if err != nil || p.side != e.sess.Side.Other() {
			continue // not ours, forged, or our own probe reflected
		}
		select {
		case e.in <- inbound{sock: i, from: netaddr.AddrPort(addr), p: p, at: time.Now()}:
		case <-e.quit:
			return
		}
	}
}

// halt stops the readers. keep, if >= 0, is a socket left open with no read
// deadline; every other socket is closed.
func (e *engine) halt(keep int) {
	e.stop.Store(true)
	close(e.quit)
	for i, c := range e.conns {
		if i == keep {
			_ = c.SetReadDeadline(time.Now()) // wakes its reader
			continue
		}
		_ = c.Close()
	}
	e.wg.Wait()
	if keep >= 0 {
		_ = e.conns[keep].SetReadDeadline(time.Time{})
	}
}

// run probes following pl until the path is confirmed in both directions
// or the deadline passes. On success it returns the index of the winning
// socket, left open; on failure every socket is closed.
func (e *engine) run(ctx context.Context, timeout time.Duration, pl plan) (int, error) {
	e.start = time.Now()
	e.startReaders()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	i := 0
	next, more := pl(0)
	timer := time.NewTimer(next.at)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			e.halt(-1)
			return -1, fmt.Errorf("%w after %v and %d probes: %w", ErrNoPath, time.Since(e.start).Round(time.Millisecond), e.attempts, context.Cause(ctx))
		case <-timer.C:
			if more {
				e.sendStep(next)
				i++
				next, more = pl(i)
			} else {
				e.sendStep(step{})
			}
			wait := idleTick
			if more {
				wait = next.at - time.Since(e.start)
			}
			timer.Reset(max(wait, 0))
		case m := <-e.in:
			e.handle(m)
			if e.got != nil && e.peerConfirmed {
				e.halt(e.got.sock)
				return e.got.sock, nil
			}
		}
	}
}

// sendStep probes the step's targets, and also every peer-reflexive pair;
// once our direction is confirmed it probes only the confirmed pair, to
// tell the peer.
func (e *engine) sendStep(s step) {
	if e.got != nil {
		e.ping(*e.got)
		return
	}
	restore := func() {}
	if s.lowTTL && e.openingTTL > 0 {
		restore = e.lowerTTL()
	}
	for _, t := range s.targets {
		e.ping(t)
	}
	restore()
	// Peer-reflexive pairs have seen the peer's packets: full TTL.
	for p := range e.prflx {
		e.ping(p)
	}
}

func (e *engine) ping(t pair) {
	n := newNonce()
	e.buf = e.sess.marshal(e.buf[:0], probe{typ: msgPing, confirmed: e.got != nil, side: e.sess.Side, nonce: n})
	// Stamp before sending: the pong's arrival is stamped by a reader that
	// may run before WriteTo returns.
	at := time.Now()
	if _, err := e.conns[t.sock].WriteTo(e.buf, net.UDPAddrFromAddrPort(t.remote)); err != nil {
		e.log.Debug("ping not sent", "to", t.remote, "err", err)
		return
	}
	e.attempts++
	e.pending[n] = sentPing{pair: t, at: at}
}

func (e *engine) handle(m inbound) {
	if e.firstPacket < 0 {
		e.firstPacket = m.at.Sub(e.start)
	}
	if m.p.confirmed {
		e.peerConfirmed = true
	}
	switch m.p.typ {
	case msgPing:
		// Reply to where the ping came from (peer-reflexive), whatever
		// address we were told.
		e.buf = e.sess.marshal(e.buf[:0], probe{typ: msgPong, confirmed: e.got != nil, side: e.sess.Side, nonce: m.p.nonce, observed: m.from})
		if _, err := e.conns[m.sock].WriteTo(e.buf, net.UDPAddrFromAddrPort(m.from)); err != nil {
			e.log.Debug("pong not sent", "to", m.from, "err", err)
		}
		pr := pair{sock: m.sock, remote: m.from, kind: Prflx}
		if e.got == nil && !e.prflx[pr] {
			e.prflx[pr] = true
			e.ping(pr) // triggered check: the peer is reachable right there
		}
	case msgPong:
		sp, ok := e.pending[m.p.nonce]
		if !ok || e.got != nil {
			return // a replay, or not needed any more
		}
		// The pong's source is where the peer really is for this socket.
		e.got = &pair{sock: sp.sock, remote: m.from, kind: sp.kind}
		e.gotKind = sp.kind
		e.rtt = m.at.Sub(sp.at)
		e.mapped = m.p.observed
		e.ping(*e.got) // carries the confirmed flag to the peer
	}
}

// result fills the common fields of a Result.
func (e *engine) result(r *Result, winner int) {
	r.Attempts = e.attempts
	r.Duration = time.Since(e.start)
	if e.firstPacket >= 0 {
		r.TimeToFirstPacket = e.firstPacket
	}
	if winner >= 0 && e.got != nil {
		r.Success = true
		r.Local = netaddr.AddrPort(e.conns[winner].LocalAddr())
		r.Remote = e.got.remote
		r.Mapped = e.mapped
		r.RTT = e.rtt
	}
}

// lowerTTL sets the opening TTL on every socket that is a real socket and
// returns a function that restores the previous TTLs. Lab sockets that are
// not kernel sockets are skipped silently.
func (e *engine) lowerTTL() func() {
	var undo []func()
	for _, c := range e.conns {
		if _, ok := c.(syscall.Conn); !ok {
			continue
		}
		if netaddr.AddrPort(c.LocalAddr()).Addr().Is6() {
			// IPv6: the hop limit, for the same reason (a NAT66 or a
			// firewall's conntrack falls into the same trap).
			pc := ipv6.NewPacketConn(c)
			old, err := pc.HopLimit()
			if err != nil || pc.SetHopLimit(e.openingTTL) != nil {
				continue
			}
			undo = append(undo, func() { _ = pc.SetHopLimit(old) })
			continue
		}
		pc := ipv4.NewPacketConn(c)
		old, err := pc.TTL()
		if err != nil {
			continue
		}
		if err := pc.SetTTL(e.openingTTL); err != nil {
			continue
		}
		undo = append(undo, func() { _ = pc.SetTTL(old) })
	}
	return func() {
		for _, u := range undo {
			u()
		}
	}
}
