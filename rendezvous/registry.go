package rendezvous

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/natlab/natlab/internal/netaddr"
	"github.com/natlab/natlab/internal/opslog"
	"github.com/natlab/natlab/internal/ratelimit"
)

// Server-side limits, each with why.
const (
	// MaxPairings bounds the registry's memory: a pairing holds at most
	// about 7 KiB (two peers' info, the last two steps' data each; see
	// TestPairingMemoryBounded), so the table stays under 70 MiB, and a
	// flood of creates gets errors instead of growing the heap.
	MaxPairings = 10000
	// maxInfo bounds what a peer may park on the server.
	maxInfo = 1024
	// MaxSteps bounds the barrier steps of one pairing: a probe has a
	// handful of stages.
	MaxSteps = 64
	// MaxAlignDelay bounds how long a "go" is held to align the peers'
	// start (half the difference of their round trips): the peers report
	// their RTTs, and 1 s covers a 2 s satellite round trip; more is a lie.
	MaxAlignDelay = time.Second
)

// Per-source defaults (see Limits), each with why.
const (
	// DefaultRate and DefaultBurst: a pairing and its steps cost each
	// peer a dozen or two messages within a second (polls from 10 ms
	// while it waits for the other); 100 a second with bursts of 200
	// leaves room for a host running several probes at once.
	DefaultRate  = 100
	DefaultBurst = 200
	// DefaultPairingsPerSource: a probe holds one pairing for a few
	// minutes; 32 at once lets a host behind a shared address run many,
	// while one source can no longer fill the table (MaxPairings) and
	// lock everyone out.
	DefaultPairingsPerSource = 32
	// sweepEvery is how often the whole table is swept for expired
	// pairings: their memory is freed within a second.
	sweepEvery = time.Second
	// byeLinger is how long a pairing outlives a peer's bye, so the other
	// peer learns that its partner left instead of "unknown code".
	byeLinger = 30 * time.Second
	// AmplificationFactor bounds an answer to a UDP datagram at this
	// many times the datagram's size: the sender's address is not
	// verified, and a spoofed one must not make the server a reflector.
	// Clients pad their requests to MinRequest bytes to get full answers.
	AmplificationFactor = 3
	// MinRequest is what clients pad requests to: any answer
	// (MaxMessage at most) then fits the amplification bound.
	MinRequest = (MaxMessage + AmplificationFactor - 1) / AmplificationFactor
)

// Limits bound what one source (an IPv4 address or an IPv6 /64) may take
// of the registry. Zero fields take the defaults; negative ones disable
// the limit.
type Limits struct {
	Rate              float64 // messages a second, on average
	Burst             int     // messages at once
	PairingsPerSource int     // live pairings created by one source
}

func (l Limits) withDefaults() Limits {
	if l.Rate == 0 {
		l.Rate = DefaultRate
	}
	if l.Burst <= 0 {
		l.Burst = DefaultBurst
	}
	if l.PairingsPerSource == 0 {
		l.PairingsPerSource = DefaultPairingsPerSource
	}
	return l
}

// Outgoing is a datagram the registry wants sent.
type Outgoing struct {
	To    netip.AddrPort
	Raw   []byte
	Delay time.Duration // send after this long (start-time alignment), at most MaxAlignDelay

	via   net.PacketConn // the socket the recipient last spoke on, if known
	owner *pairing       // a delayed message's pairing, which owns its timer
}

// Stats are the registry's counters for metrics.
type Stats struct {
	Pairings int    `json:"pairings"` // live pairings
	Paired   uint64 `json:"paired"`   // pairings that got their second peer
	Rejected uint64 `json:"rejected"` // requests answered with an error
	Timers   int    `json:"timers"`   // delayed messages waiting to be sent
	Limited  uint64 `json:"limited"`  // messages dropped by the per-source rate limit
	Muted    uint64 `json:"muted"`    // answers not sent: over AmplificationFactor times the request
}

// Registry is the server side of the rendezvous. It is safe for concurrent
// use; Handle is a pure step from (datagram, sender) to datagrams to send.
type Registry struct {
	now    func() time.Time
	limits Limits
	rate   *ratelimit.Limiter
	log    *slog.Logger // pairings, with their codes hashed
	ops    *opslog.Log  // drops and refusals, rate-limited

	mu       sync.Mutex
	pairings map[string]*pairing
	streams  map[netip.AddrPort]*streamPeer // peers that talk over TCP
	udp      net.PacketConn                 // the last socket a datagram came in on
	paired   uint64
	rejected uint64
	timers   int
	muted    uint64
	bySource map[netip.Addr]int // live pairings by creator's source
	swept    time.Time          // the last expire
}

type peerState struct {
	token string
	addr  netip.AddrPort
	info  json.RawMessage
	step  int
	data  map[int]json.RawMessage // the last two steps', so a late retransmission gets the right one
	rtt   float64
	pc    net.PacketConn // the socket its last datagram came in on; nil over TCP
}

type pairing struct {
	src     netip.Addr // the creator's source (ratelimit.Source)
	expires time.Time
	peers   [2]*peerState // [0] created it, [1] joined
	left    bool          // one peer said bye: the other must not wait
	bye     [2]bool       // which peers said bye
	// uncounted: both peers left (or it expired), so it no longer counts
	// against its creator's PairingsPerSource
	uncounted bool
	goStep    int // the last step released
	timers    map[*pendingSend]struct{}
	dead      bool // expired: its timers are stopped and no new ones start
}

// pendingSend is a delayed message's timer.
type pendingSend struct{ t *time.Timer }

// NewRegistry returns an empty registry. now may be nil (time.Now).
func NewRegistry(now func() time.Time) *Registry {
	if now == nil {
		now = time.Now
	}
	return NewRegistryLimits(now, Limits{})
}

// NewRegistryLimits is NewRegistry with per-source limits.
func NewRegistryLimits(now func() time.Time, l Limits) *Registry {
	if now == nil {
		now = time.Now
	}
	l = l.withDefaults()
	return &Registry{now: now, log: slog.New(slog.DiscardHandler), limits: l, rate: ratelimit.New(l.Rate, l.Burst), pairings: map[string]*pairing{}, bySource: map[netip.Addr]int{}}
}

// SetLogger makes the registry log each pairing created and joined. The
// code is logged only as a hash (CodeHash): it is the secret that lets a
// peer in.
func (r *Registry) SetLogger(l *slog.Logger) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.log, r.ops = l, opslog.New(l)
}

// CodeHash names a pairing code in logs without revealing it: the first
// 12 hex digits of its SHA-256.
func CodeHash(code string) string {
	h := sha256.Sum256([]byte(code))
	return hex.EncodeToString(h[:6])
}

// Stats returns the counters.
func (r *Registry) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return Stats{Pairings: len(r.pairings), Paired: r.paired, Rejected: r.rejected, Timers: r.timers,
		Limited: r.rate.Dropped(), Muted: r.muted}
}

// Close stops every delayed message.
func (r *Registry) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for c, p := range r.pairings {
		r.drop(c, p)
	}
}

// Handle processes one datagram from a peer and returns what to send. It
// never fails: bad requests get an error message, garbage gets nothing.
func (r *Registry) Handle(b []byte, from netip.AddrPort) []Outgoing {
	return r.bound(b, from, r.handle(b, from, nil))
}

// HandleFrom handles a datagram that came in on pc and sends the
// answers: the sender's from pc, the other peer's from the socket (or TCP
// stream) it last spoke on.
func (r *Registry) HandleFrom(pc net.PacketConn, b []byte, from netip.AddrPort) {
	r.Send(pc, r.bound(b, from, r.handle(b, from, pc)))
}

// bound drops answers to the sender of a datagram that are more than
// AmplificationFactor times its size (padded clients never meet this).
func (r *Registry) bound(b []byte, from netip.AddrPort, outs []Outgoing) []Outgoing {
	kept := outs[:0]
	for _, o := range outs {
		if o.To == from && len(o.Raw) > AmplificationFactor*len(b) {
			r.mu.Lock()
			r.muted++
			r.mu.Unlock()
			continue
		}
		kept = append(kept, o)
	}
	return kept
}

func (r *Registry) handle(b []byte, from netip.AddrPort, pc net.PacketConn) []Outgoing {
	if !r.rate.Allow(from.Addr()) {
		r.ops.Event(slog.LevelWarn, "rendezvous-rate-limit", "rendezvous message dropped: source over its rate limit", "from", from.Addr())
		return nil
	}
	m, err := Decode(b)
	if err != nil {
		if m.V != 0 && m.V != Version {
			return r.reply(from, Message{Type: TypeError, Error: err.Error()})
		}
		return nil // not ours, or garbage: stay silent like the STUN side
	}
	code, err := NormalizeCode(m.Code)
	if err != nil {
		return r.errorTo(from, err.Error())
	}
	if len(m.Token) != 32 {
		return r.errorTo(from, "missing or malformed peer token")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if now.Sub(r.swept) >= sweepEvery || now.Before(r.swept) {
		r.expire(now)
	}
	p := r.pairings[code]
	if p != nil && now.After(p.expires) {
		r.drop(code, p)
		p = nil
	}
	switch m.Type {
	case TypeCreate, TypeJoin, TypeMeet:
		if len(m.Info) > maxInfo {
			return r.errorLocked(from, "peer info too large")
		}
		return r.route(r.register(code, p, m, from, pc), r.pairings[code], from, pc)
	case TypeStep:
		return r.route(r.step(p, m, from, pc), p, from, pc)
	case TypeBye:
		if i := p.slot(m.Token); i >= 0 {
			p.left = true
			p.bye[i] = true
			if p.bye[0] && (p.bye[1] || p.peers[1] == nil) {
				r.uncount(p) // finished: no longer held against its creator
			}
			// Keep the pairing a little so the other peer (or a late
			// third) learns that the pairing is over, not "unknown code".
			if lim := r.now().Add(byeLinger); lim.Before(p.expires) {
				p.expires = lim
			}
		}
		return nil
	}
	return r.errorLocked(from, "unknown message type "+m.Type)
}

func (p *pairing) slot(token string) int {
	if p == nil {
		return -1
	}
	for i, ps := range p.peers {
		if ps != nil && ps.token == token {
			return i
		}
	}
	return -1
}

// route names the socket each message leaves from: the sender's own, or
// the one the other peer last spoke on.
func (r *Registry) route(outs []Outgoing, p *pairing, from netip.AddrPort, pc net.PacketConn) []Outgoing {
	for i := range outs {
		switch {
		case outs[i].To == from:
			outs[i].via = pc
		case p != nil:
			for _, ps := range p.peers {
				if ps != nil && ps.addr == outs[i].To {
					outs[i].via = ps.pc
				}
			}
		}
		if outs[i].Delay > 0 {
			outs[i].owner = p
		}
	}
	return outs
}

func (r *Registry) register(code string, p *pairing, m Message, from netip.AddrPort, pc net.PacketConn) []Outgoing {
	me := &peerState{token: m.Token, addr: from, info: m.Info, pc: pc}
	switch {
	case p == nil && m.Type == TypeJoin:
		return r.errorLocked(from, "unknown or expired pairing code")
	case p == nil:
		if len(r.pairings) >= MaxPairings {
			r.ops.Event(slog.LevelWarn, "pairings-full", "pairing refused: the server holds its maximum of pairings", "from", from, "max", MaxPairings)
			return r.errorLocked(from, "server busy: too many pairings")
		}
		src := ratelimit.Source(from.Addr())
		if n := r.limits.PairingsPerSource; n > 0 && r.bySource[src] >= n {
			r.ops.Event(slog.LevelWarn, "pairings-per-source", "pairing refused: source over its limit of pairings", "from", from.Addr(), "limit", n)
			return r.errorLocked(from, fmt.Sprintf("too many pairings from %s (limit %d)", from.Addr(), n))
		}
		p = &pairing{src: src, expires: r.now().Add(CodeTTL)}
		p.peers[0] = me
		r.pairings[code] = p
		r.bySource[src]++
		r.log.Info("pairing created", "code_hash", CodeHash(code), "from", from, "mode", m.Type)
		return r.replyLocked(from, Message{Type: TypeWait, Code: code})
	}
	if p.left {
		return r.errorLocked(from, "the other peer left this pairing")
	}
	i := p.slot(m.Token)
	switch {
	case i >= 0: // a retransmission, maybe from a new address
		p.peers[i].addr, p.peers[i].info, p.peers[i].pc = from, m.Info, pc
	case m.Type == TypeCreate:
		return r.errorLocked(from, "pairing code already in use")
	case p.peers[1] != nil:
		return r.errorLocked(from, "pairing code already used by two peers")
	default:
		i = 1
		p.peers[1] = me
		r.paired++
		r.log.Info("pairing joined", "code_hash", CodeHash(code), "from", from, "first", p.peers[0].addr)
	}
	other := p.peers[1-i]
	if other == nil {
		return r.replyLocked(from, Message{Type: TypeWait, Code: code})
	}
	out := r.replyLocked(from, Message{Type: TypePeer, Code: code, Peer: other.token, Info: other.info, Slot: i + 1})
	if i == 1 {
		// Tell the first peer now rather than on its next retransmission.
		out = append(out, r.replyLocked(other.addr, Message{Type: TypePeer, Code: code, Peer: me.token, Info: me.info, Slot: 1})...)
	}
	return out
}

func (r *Registry) step(p *pairing, m Message, from netip.AddrPort, pc net.PacketConn) []Outgoing {
	if p == nil {
		return r.errorLocked(from, "unknown or expired pairing code (did the server restart?)")
	}
	i := p.slot(m.Token)
	if i < 0 {
		return r.errorLocked(from, "not a peer of this pairing")
	}
	if m.Step < 1 || m.Step > MaxSteps || len(m.Data) > maxInfo {
		return r.errorLocked(from, "step out of range or data too large")
	}
	me, other := p.peers[i], p.peers[1-i]
	if other == nil {
		return r.errorLocked(from, "no second peer yet")
	}
	if p.left && m.Step > p.goStep {
		// A released step is still answered below: the peer that left
		// may have finished just before this one heard its go.
		return r.errorLocked(from, "the other peer left this pairing")
	}
	me.addr, me.pc = from, pc
	if m.Step > me.step {
		if me.data == nil {
			me.data = map[int]json.RawMessage{}
		}
		me.step, me.data[m.Step], me.rtt = m.Step, m.Data, clampRTT(m.RTT)
		// A peer can be at most one step behind the other, so older data
		// is never asked for again: two steps bound a pairing's memory.
		for k := range me.data {
			if k < m.Step-1 {
				delete(me.data, k)
			}
		}
	}
	// goMsg releases step m.Step to a peer with the other's data for it.
	goMsg := func(src *peerState) Message {
		return Message{Type: TypeGo, Code: m.Code, Step: m.Step, Data: src.data[m.Step]}
	}
	switch {
	case m.Step <= p.goStep:
		// Already released: this is a retransmission from a peer that
		// missed its go. Answer at once.
		return r.replyLocked(from, goMsg(other))
	case other.step >= m.Step && me.step == other.step:
		p.goStep = m.Step
		// Both start together: the nearer peer waits half the
		// difference of the round trips.
		dMe, dOther := alignDelays(me.rtt, other.rtt)
		out := r.replyLocked(from, goMsg(other))
		out[0].Delay = dMe
		o := r.replyLocked(other.addr, goMsg(me))
		o[0].Delay = dOther
		return append(out, o...)
	}
	return r.replyLocked(from, Message{Type: TypeWait, Code: m.Code, Step: m.Step})
}

// clampRTT bounds a client-reported round trip (ms) to what alignDelays
// may act on.
func clampRTT(ms float64) float64 {
	limit := float64(2 * MaxAlignDelay / time.Millisecond)
	if !(ms > 0) { // negative, zero or NaN
		return 0
	}
	return min(ms, limit)
}

// alignDelays returns how long to hold each peer's go so that both arrive
// together: one-way time is half the round trip.
func alignDelays(rttA, rttB float64) (a, b time.Duration) {
	d := time.Duration((rttA - rttB) / 2 * float64(time.Millisecond))
	if d > 0 {
		return 0, d
	}
	return -d, 0
}

// expire drops every pairing past its time. It walks the whole table, so
// it runs at most once per sweepEvery (a walk per message made a full
// table slow every message); handle checks the one pairing it uses.
func (r *Registry) expire(now time.Time) {
	r.swept = now
	for c, p := range r.pairings {
		if now.After(p.expires) {
			r.drop(c, p)
		}
	}
}

// uncount stops counting p against its creator's PairingsPerSource.
func (r *Registry) uncount(p *pairing) {
	if p.uncounted {
		return
	}
	p.uncounted = true
	if r.bySource[p.src]--; r.bySource[p.src] <= 0 {
		delete(r.bySource, p.src)
	}
}

// drop removes a pairing and stops its timers.
func (r *Registry) drop(code string, p *pairing) {
	delete(r.pairings, code)
	r.uncount(p)
	p.dead = true
	for ps := range p.timers {
		ps.t.Stop()
	}
	r.timers -= len(p.timers)
	p.timers = nil
}

func (r *Registry) errorTo(to netip.AddrPort, msg string) []Outgoing {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.errorLocked(to, msg)
}

func (r *Registry) errorLocked(to netip.AddrPort, msg string) []Outgoing {
	r.rejected++
	return r.replyLocked(to, Message{Type: TypeError, Error: msg})
}

func (r *Registry) reply(to netip.AddrPort, m Message) []Outgoing {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.replyLocked(to, m)
}

func (r *Registry) replyLocked(to netip.AddrPort, m Message) []Outgoing {
	b, err := Encode(m)
	if err != nil {
		// Only a peer's oversized info could do this, and that was
		// refused on entry; answer with a short error instead.
		b, _ = Encode(Message{Type: TypeError, Error: "reply too large"})
	}
	return []Outgoing{{To: to, Raw: b}}
}

// Serve answers rendezvous datagrams on conn until it is closed. Servers
// that share a socket with STUN call Handle and Send themselves.
func (r *Registry) Serve(conn net.PacketConn) error {
	buf := make([]byte, MaxMessage+1)
	for {
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("rendezvous: %w", err)
		}
		r.HandleFrom(conn, buf[:n], netaddr.AddrPort(from))
	}
}
