package holepunch

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/pion/transport/v4"

	"github.com/natlab/natlab/natclass"
)

const (
	// DefaultOpeningTTL is a TTL that gets a packet through our own NAT
	// (creating the mapping) but expires at the next router, before the
	// peer's NAT: an opening packet that reached the peer's router before
	// the peer's own mapping exists can make Linux conntrack give the peer
	// a different external port (the conntrack trap, README). Two hops fit a host behind
	// one home router; 0 turns the opening packets off.
	DefaultOpeningTTL = 2
	// MaxPredicted bounds the predicted ports per candidate: each costs a
	// probe per round, and a sequential allocator with more than 32 other
	// flows in between is as good as random.
	MaxPredicted = 32
	// DefaultPredicted is how many ports ahead of the last seen one are
	// tried: the peer's own probes to our host and srflx candidates take
	// a few, other traffic a few more.
	DefaultPredicted = 16
)

// Config configures PunchUDP.
type Config struct {
	// Net opens the socket when Conn is nil.
	Net transport.Net
	// Conn is the socket to punch from, typically the one whose srflx
	// candidate the peer got. PunchUDP owns it from then on: it is closed
	// on failure and becomes the Path's on success.
	Conn net.PacketConn
	// Session authenticates the probes.
	Session Session
	// Remote are the peer's candidates, in any order: host candidates are
	// always probed first in each round.
	Remote []Candidate
	// Schedule is when probes go out (DefaultSchedule when zero).
	Schedule Schedule
	// Timeout bounds the punch (the schedule's Total, or
	// DefaultPunchTimeout, when 0).
	Timeout time.Duration
	// OpeningTTL, when > 0, sends the probes of the schedule's Opening
	// with this IP TTL (see DefaultOpeningTTL): they only open our own
	// mappings, and the peer is probed after it. It must exceed the
	// number of NATs in front of this host (2 for one NAT, 3 behind a
	// CGN) and stay below the hops to the peer's NAT. Sockets that are
	// not kernel sockets ignore it.
	OpeningTTL int
	// Hold, when > 0, delays every probe to the peer's candidates by this
	// long; the peer's probes are still answered at once. Where nothing
	// lies between the two routers the first packet decides, and the
	// side that holds lets the peer open first
	// (natclass.Prediction.Opener).
	Hold time.Duration
	// Technique labels a success through a non-host candidate (natclass.DirectUDP
	// when empty; natclass.PredictUDP when the peer's candidates were predicted).
	Technique natclass.Technique
	// Logger receives debug notes; nil discards them.
	Logger *slog.Logger
}

// PunchUDP probes every peer candidate from one socket on cfg.Schedule,
// answers the peer's probes at the address they come from, and returns as
// soon as a path is confirmed in both directions. The Result is filled in
// either case; on failure the error wraps ErrNoPath and every socket is
// closed.
func PunchUDP(ctx context.Context, cfg Config) (*Path, Result, error) {
	res := Result{Technique: cmp.Or(cfg.Technique, natclass.DirectUDP)}
	if err := cfg.Session.valid(); err != nil {
		res.Err = err
		closeConn(cfg.Conn)
		return nil, res, err
	}
	conn := cfg.Conn
	if conn == nil {
		if cfg.Net == nil {
			res.Err = errors.New("holepunch: neither Conn nor Net given")
			return nil, res, res.Err
		}
		c, err := cfg.Net.ListenPacket(udpSocket(firstAddr(cfg.Remote)))
		if err != nil {
			res.Err = fmt.Errorf("open punch socket: %w", err)
			return nil, res, res.Err
		}
		conn = c
	}
	sch := cfg.Schedule
	if sch == (Schedule{}) {
		sch = DefaultSchedule()
	}
	timeout := cmp.Or(cfg.Timeout, sch.Total, DefaultPunchTimeout)
	if sch.Total == 0 {
		sch.Total = timeout
	}
	times := sch.Times()
	targets := orderCandidates(cfg.Remote)
	pl := func(i int) (step, bool) {
		if i >= len(times) {
			return step{}, false
		}
		return step{at: times[i], targets: targets, lowTTL: times[i] < sch.Opening}, true
	}
	e := newEngine(cfg.Session, []net.PacketConn{conn}, cfg.OpeningTTL, cfg.Logger)
	win, err := e.run(ctx, timeout+max(cfg.Hold, 0), held(pl, cfg.Hold))
	e.result(&res, win)
	if err != nil {
		res.Err = err
		return nil, res, err
	}
	// Label by the candidate the path's address was given as, whichever
	// probe (planned or peer-reflexive) happened to confirm it first.
	kind := e.gotKind
	for _, t := range targets {
		if t.remote == res.Remote {
			kind = t.kind
		}
	}
	switch kind {
	case Host:
		res.Technique = natclass.SameLAN
	case Predicted:
		res.Technique = natclass.PredictUDP
	}
	return newPath(res, conn, cfg.Session), res, nil
}

// held delays every step of pl by d.
func held(pl plan, d time.Duration) plan {
	if d <= 0 {
		return pl
	}
	return func(i int) (step, bool) {
		s, ok := pl(i)
		s.at += d
		return s, ok
	}
}

// orderCandidates puts host candidates first and drops duplicates. A host
// candidate that is also the srflx one is a public host, not a LAN peer,
// and keeps the srflx kind.
func orderCandidates(cs []Candidate) []pair {
	rank := map[Kind]int{Host: 0, Srflx: 1, Prflx: 2, Predicted: 3}
	sorted := slices.Clone(cs)
	public := map[netip.AddrPort]bool{}
	for _, c := range cs {
		if c.Kind == Srflx {
			public[c.Addr] = true
		}
	}
	for i, c := range sorted {
		if c.Kind == Host && public[c.Addr] {
			sorted[i].Kind = Srflx
		}
	}
	slices.SortStableFunc(sorted, func(a, b Candidate) int { return cmp.Compare(rank[a.Kind], rank[b.Kind]) })
	seen := map[netip.AddrPort]bool{}
	var out []pair
	for _, c := range sorted {
		if !c.Addr.IsValid() || seen[c.Addr] {
			continue
		}
		seen[c.Addr] = true
		out = append(out, pair{sock: 0, remote: c.Addr, kind: c.Kind})
	}
	return out
}

// PredictPorts returns the candidates a sequential allocator should hand
// out after the port of last: last+step·1 … last+step·k (k at most
// MaxPredicted), wrapping within the non-privileged range like NATs do.
func PredictPorts(last netip.AddrPort, step, k int) []Candidate {
	if step == 0 || k <= 0 || !last.IsValid() {
		return nil
	}
	k = min(k, MaxPredicted)
	const lo, span = 1024, 65536 - 1024
	out := make([]Candidate, 0, k)
	for i := 1; i <= k; i++ {
		p := (int(last.Port())-lo+step*i)%span + lo
		if p < lo {
			p += span
		}
		out = append(out, Candidate{Kind: Predicted, Addr: netip.AddrPortFrom(last.Addr(), uint16(p))})
	}
	return out
}

func closeConn(c net.PacketConn) {
	if c != nil {
		_ = c.Close()
	}
}
