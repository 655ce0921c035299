package rendezvous

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/natlab/natlab/internal/netaddr"
)

// Server-side limits, each with why.
const (
	// MaxPairings bounds the registry's memory: a pairing is under 3 KiB,
	// so the worst case is a few tens of MiB, and a flood of creates gets
	// errors instead of growing the heap.
	MaxPairings = 10000
	// maxInfo bounds what a peer may park on the server.
	maxInfo = 1024
	// MaxSteps bounds the barrier steps of one pairing (and so the data
	// kept per peer): a probe has a handful of stages.
	MaxSteps = 64
)

// Outgoing is a datagram the registry wants sent.
type Outgoing struct {
	To    netip.AddrPort
	Raw   []byte
	Delay time.Duration // send after this long (start-time alignment)
}

// Stats are the registry's counters for metrics.
type Stats struct {
	Pairings int    `json:"pairings"` // live pairings
	Paired   uint64 `json:"paired"`   // pairings that got their second peer
	Rejected uint64 `json:"rejected"` // requests answered with an error
}

// Registry is the server side of the rendezvous. It is safe for concurrent
// use; Handle is a pure step from (datagram, sender) to datagrams to send.
type Registry struct {
	now func() time.Time

	mu       sync.Mutex
	pairings map[string]*pairing
	streams  map[netip.AddrPort]net.Conn // peers that talk over TCP
	udp      net.PacketConn              // the last socket a datagram came in on
	paired   uint64
	rejected uint64
}

type peerState struct {
	token string
	addr  netip.AddrPort
	info  json.RawMessage
	step  int
	data  map[int]json.RawMessage // by step, so a late retransmission gets the right one
	rtt   float64
}

type pairing struct {
	expires time.Time
	peers   [2]*peerState // [0] created it, [1] joined
	left    bool          // one peer said bye: the other must not wait
	goStep  int           // the last step released
}

// NewRegistry returns an empty registry. now may be nil (time.Now).
func NewRegistry(now func() time.Time) *Registry {
	if now == nil {
		now = time.Now
	}
	return &Registry{now: now, pairings: map[string]*pairing{}}
}

// Stats returns the counters.
func (r *Registry) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return Stats{Pairings: len(r.pairings), Paired: r.paired, Rejected: r.rejected}
}

// Handle processes one datagram from a peer and returns what to send. It
// never fails: bad requests get an error message, garbage gets nothing.
func (r *Registry) Handle(b []byte, from netip.AddrPort) []Outgoing {
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
	r.expire()
	p := r.pairings[code]
	switch m.Type {
	case TypeCreate, TypeJoin, TypeMeet:
		if len(m.Info) > maxInfo {
			return r.errorLocked(from, "peer info too large")
		}
		return r.register(code, p, m, from)
	case TypeStep:
		return r.step(p, m, from)
	case TypeBye:
		if p != nil && p.slot(m.Token) >= 0 {
			p.left = true
			// Keep the pairing until it expires so the other peer learns
			// that its partner left instead of "unknown code".
		}
		return nil
	}
	return r.errorLocked(from, "unknown message type "+m.Type)
}

func (p *pairing) slot(token string) int {
	for i, ps := range p.peers {
		if ps != nil && ps.token == token {
			return i
		}
	}
	return -1
}

func (r *Registry) register(code string, p *pairing, m Message, from netip.AddrPort) []Outgoing {
	me := &peerState{token: m.Token, addr: from, info: m.Info}
	switch {
	case p == nil && m.Type == TypeJoin:
		return r.errorLocked(from, "unknown or expired pairing code")
	case p == nil:
		if len(r.pairings) >= MaxPairings {
			return r.errorLocked(from, "server busy: too many pairings")
		}
		p = &pairing{expires: r.now().Add(CodeTTL)}
		p.peers[0] = me
		r.pairings[code] = p
		return r.replyLocked(from, Message{Type: TypeWait, Code: code})
	}
	if p.left {
		return r.errorLocked(from, "the other peer left this pairing")
	}
	i := p.slot(m.Token)
	switch {
	case i >= 0: // a retransmission, maybe from a new address
		p.peers[i].addr, p.peers[i].info = from, m.Info
	case m.Type == TypeCreate:
		return r.errorLocked(from, "pairing code already in use")
	case p.peers[1] != nil:
		return r.errorLocked(from, "pairing code already used by two peers")
	default:
		i = 1
		p.peers[1] = me
		r.paired++
	}
	other := p.peers[1-i]
	if other == nil {
		return r.replyLocked(from, Message{Type: TypeWait, Code: code})
	}
	out := r.replyLocked(from, Message{Type: TypePeer, Code: code, Peer: other.token, Info: other.info})
	if i == 1 {
		// Tell the first peer now rather than on its next retransmission.
		out = append(out, r.replyLocked(other.addr, Message{Type: TypePeer, Code: code, Peer: me.token, Info: me.info})...)
	}
	return out
}

func (r *Registry) step(p *pairing, m Message, from netip.AddrPort) []Outgoing {
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
	me.addr = from
	if m.Step > me.step {
		if me.data == nil {
			me.data = map[int]json.RawMessage{}
		}
		me.step, me.data[m.Step], me.rtt = m.Step, m.Data, m.RTT
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

// alignDelays returns how long to hold each peer's go so that both arrive
// together: one-way time is half the round trip.
func alignDelays(rttA, rttB float64) (a, b time.Duration) {
	d := time.Duration((rttA - rttB) / 2 * float64(time.Millisecond))
	if d > 0 {
		return 0, d
	}
	return -d, 0
}

func (r *Registry) expire() {
	now := r.now()
	for c, p := range r.pairings {
		if now.After(p.expires) {
			delete(r.pairings, c)
		}
	}
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
		r.Send(conn, r.Handle(buf[:n], netaddr.AddrPort(from)))
	}
}
