package natclass

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/stun/v3"

	"github.com/natlab/natlab/internal/netaddr"
)

// errTimeout means no answer arrived within the probe's schedule.
var errTimeout = errors.New("no response")

// ServerError is a STUN error response (for example 420 to a CHANGE-REQUEST
// the server cannot honour).
type ServerError struct {
	Code   int
	Reason string
}

func (e *ServerError) Error() string { return fmt.Sprintf("server error %d %s", e.Code, e.Reason) }

// packet is a STUN message received on a socket.
type packet struct {
	msg  *stun.Message
	from netip.AddrPort
	on   *sock // the socket it arrived on
}

// sock is a UDP socket with a reader that routes STUN messages to waiters
// by transaction ID, so several transactions can share it.
type sock struct {
	c     net.PacketConn
	local netip.AddrPort

	mu      sync.Mutex
	waiters map[[stun.TransactionIDSize]byte]chan packet
	done    chan struct{}
}

func newSock(c net.PacketConn) *sock {
	s := &sock{c: c, local: netaddr.AddrPort(c.LocalAddr()), waiters: map[[stun.TransactionIDSize]byte]chan packet{}, done: make(chan struct{})}
	go s.read()
	return s
}

// close closes the socket and waits for its reader.
func (s *sock) close() {
	_ = s.c.Close() // the only error is "already closed"
	<-s.done
}

func (s *sock) read() {
	defer close(s.done)
	buf := make([]byte, 1500)
	for {
		n, from, err := s.c.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// vnet and some platforms report closure with other errors;
			// a closed socket fails every read, so stop on repeats.
			if !isTemporary(err) {
				return
			}
			continue
		}
		m := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
		if m.Decode() != nil {
			continue
		}
		s.mu.Lock()
		ch := s.waiters[m.TransactionID]
		s.mu.Unlock()
		if ch != nil {
			select {
			case ch <- packet{msg: m, from: netaddr.AddrPort(from), on: s}:
			default: // a retransmission's duplicate answer
			}
		}
	}
}

func isTemporary(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// expect registers interest in a transaction; cancel unregisters it.
func (s *sock) expect(id [stun.TransactionIDSize]byte) (chan packet, func()) {
	ch := make(chan packet, 1)
	return ch, s.expectOn(id, ch)
}

// expectOn routes a transaction to an existing channel.
func (s *sock) expectOn(id [stun.TransactionIDSize]byte, ch chan packet) func() {
	s.mu.Lock()
	s.waiters[id] = ch
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		delete(s.waiters, id)
		s.mu.Unlock()
	}
}

// schedule is when a request is (re)transmitted, relative to the first
// send, and when to give up.
type schedule struct {
	sends  []time.Duration
	giveUp time.Duration
	gate   <-chan struct{} // if set, the first send waits for it
	sent   func()          // if set, called after the first send
}

// transact sends a Binding request built from setters to `to` on
// schedule, and waits for the answer on `recv` (normally s itself; another
// socket for the hairpin test). It returns the answer and the time since
// the first send.
func (s *sock) transact(ctx context.Context, recv *sock, to netip.AddrPort, sch schedule, setters ...stun.Setter) (packet, time.Duration, error) {
	m := stun.New()
	all := append([]stun.Setter{stun.TransactionID, stun.BindingRequest}, setters...)
	all = append(all, stun.Fingerprint)
	if err := m.Build(all...); err != nil {
		return packet{}, 0, fmt.Errorf("build request: %w", err)
	}
	ch, cancel := recv.expect(m.TransactionID)
	defer cancel()
	if recv != s {
		// Error responses (and answers from servers that ignore what
		// redirects them) come back to the sender: listen there too.
		unexp := s.expectOn(m.TransactionID, ch)
		defer unexp()
	}
	if sch.gate != nil {
		select {
		case <-ctx.Done():
			return packet{}, 0, ctx.Err()
		case <-sch.gate:
		}
	}
	start := time.Now()
	dst := net.UDPAddrFromAddrPort(to)
	giveUp := time.NewTimer(sch.giveUp)
	defer giveUp.Stop()
	var retx *time.Timer
	next := 0
	send := func() error {
		if _, err := s.c.WriteTo(m.Raw, dst); err != nil {
			return fmt.Errorf("send to %s: %w", to, err)
		}
		next++
		if next < len(sch.sends) {
			d := sch.sends[next] - time.Since(start)
			if retx == nil {
				retx = time.NewTimer(d)
			} else {
				retx.Reset(d)
			}
		}
		return nil
	}
	err := send()
	if sch.sent != nil {
		sch.sent()
	}
	if err != nil {
		return packet{}, 0, err
	}
	defer func() {
		if retx != nil {
			retx.Stop()
		}
	}()
	for {
		var retxC <-chan time.Time
		if retx != nil && next < len(sch.sends) {
			retxC = retx.C
		}
		select {
		case p := <-ch:
			rtt := time.Since(start)
			if p.msg.Type.Class == stun.ClassErrorResponse {
				var ec stun.ErrorCodeAttribute
				if err := ec.GetFrom(p.msg); err != nil {
					return p, rtt, &ServerError{Code: 0, Reason: "without ERROR-CODE"}
				}
				return p, rtt, &ServerError{Code: int(ec.Code), Reason: string(ec.Reason)}
			}
			return p, rtt, nil
		case <-retxC:
			if err := send(); err != nil {
				return packet{}, 0, err
			}
		case <-giveUp.C:
			return packet{}, 0, errTimeout
		case <-ctx.Done():
			return packet{}, 0, ctx.Err()
		}
	}
}

// mappedAddr extracts XOR-MAPPED-ADDRESS, falling back to MAPPED-ADDRESS
// for servers that only speak RFC 3489 style.
func mappedAddr(m *stun.Message) (netip.AddrPort, bool) {
	var x stun.XORMappedAddress
	if err := x.GetFrom(m); err == nil {
		return udpAP(x.IP, x.Port)
	}
	var a stun.MappedAddress
	if err := a.GetFrom(m); err == nil {
		return udpAP(a.IP, a.Port)
	}
	return netip.AddrPort{}, false
}

// otherAddr extracts OTHER-ADDRESS, or RFC 3489's CHANGED-ADDRESS.
func otherAddr(m *stun.Message) (netip.AddrPort, bool) {
	var o stun.OtherAddress
	if err := o.GetFrom(m); err == nil {
		return udpAP(o.IP, o.Port)
	}
	var a stun.MappedAddress
	if err := a.GetFromAs(m, stun.AttrChangedAddress); err == nil {
		return udpAP(a.IP, a.Port)
	}
	return netip.AddrPort{}, false
}

func udpAP(ip net.IP, port int) (netip.AddrPort, bool) {
	a, ok := netip.AddrFromSlice(ip)
	if !ok || port <= 0 || port > 65535 {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(port)), true
}
