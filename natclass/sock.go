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
	"github.com/natlab/natlab/internal/stuntx"
)

// errTimeout means no answer arrived within the probe's schedule.
var errTimeout = stuntx.ErrTimeout

// ServerError is a STUN error response (for example 420 to a CHANGE-REQUEST
// the server cannot honour).
type ServerError = stuntx.ServerError

// sock is a UDP socket with a reader that routes STUN messages to waiters
// by transaction ID, so several transactions can share it.
type sock struct {
	c     net.PacketConn
	local netip.AddrPort

	mu      sync.Mutex
	waiters map[[stun.TransactionIDSize]byte]chan stuntx.Answer
	done    chan struct{}
}

func newSock(c net.PacketConn) *sock {
	s := &sock{c: c, local: netaddr.AddrPort(c.LocalAddr()), waiters: map[[stun.TransactionIDSize]byte]chan stuntx.Answer{}, done: make(chan struct{})}
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
			case ch <- stuntx.Answer{Msg: m, From: netaddr.AddrPort(from), Via: s}:
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
func (s *sock) expect(id [stun.TransactionIDSize]byte) (chan stuntx.Answer, func()) {
	ch := make(chan stuntx.Answer, 1)
	return ch, s.expectOn(id, ch)
}

// expectOn routes a transaction to an existing channel.
func (s *sock) expectOn(id [stun.TransactionIDSize]byte, ch chan stuntx.Answer) func() {
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
// send, and when to give up; gate and sent order the plan's probes.
type schedule struct {
	sends  []time.Duration
	giveUp time.Duration
	gate   <-chan struct{} // if set, the first send waits for it
	sent   func()          // if set, called after the first send
}

// transact sends a Binding request with attrs to `to` on schedule, and
// waits for the answer on `recv` (normally s itself; another socket for
// the hairpin test). It returns the answer (Via the socket it arrived on)
// and the time since the first send.
func (s *sock) transact(ctx context.Context, recv *sock, to netip.AddrPort, sch schedule, attrs ...stun.Setter) (stuntx.Answer, time.Duration, error) {
	req, err := stuntx.Request(attrs...)
	if err != nil {
		return stuntx.Answer{}, 0, err
	}
	ch, cancel := recv.expect(req.TransactionID)
	defer cancel()
	if recv != s {
		// Error responses (and answers from servers that ignore what
		// redirects them) come back to the sender: listen there too.
		unexp := s.expectOn(req.TransactionID, ch)
		defer unexp()
	}
	if sch.gate != nil {
		select {
		case <-ctx.Done():
			return stuntx.Answer{}, 0, ctx.Err()
		case <-sch.gate:
		}
	}
	dst := net.UDPAddrFromAddrPort(to)
	first := true
	a, err := stuntx.Transact(ctx, req, stuntx.Schedule{Sends: sch.sends, GiveUp: sch.giveUp}, func(b []byte) error {
		_, err := s.c.WriteTo(b, dst)
		if first && sch.sent != nil {
			sch.sent()
		}
		first = false
		if err != nil {
			return fmt.Errorf("send to %s: %w", to, err)
		}
		return nil
	}, ch)
	return a, a.RTT, err
}
