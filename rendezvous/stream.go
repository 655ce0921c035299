package rendezvous

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/natlab/natlab/internal/netaddr"
)

// Over TCP (for hosts whose UDP is blocked) the same messages travel as
// JSON lines on one connection to the server's TCP port. The server tells
// them from STUN over TCP by the first byte, as on UDP.

// Stream timing and limits, each with why.
const (
	// streamIdle closes a rendezvous connection nobody speaks on: a
	// waiting client polls at least every maxRTO.
	streamIdle = 30 * time.Second
	// streamWrite bounds one write to a slow or dead peer.
	streamWrite = 5 * time.Second
	// streamQueue is how many messages may wait for a TCP peer: a pairing
	// sends a peer a few at a time, so a full queue means the peer does
	// not read, and it is dropped.
	streamQueue = 16
)

// streamPeer is a peer on TCP. Messages to it are queued and written by
// its own goroutine, so no UDP read loop ever waits for a TCP peer.
type streamPeer struct {
	c    net.Conn
	q    chan []byte
	done chan struct{}
	once sync.Once
}

// enqueue queues a message without waiting; a peer whose queue is full
// is not reading, and its connection is closed.
func (sp *streamPeer) enqueue(b []byte) {
	select {
	case sp.q <- b:
	case <-sp.done:
	default:
		sp.stop()
	}
}

func (sp *streamPeer) stop() {
	sp.once.Do(func() {
		close(sp.done)
		_ = sp.c.Close() // unblocks both the reader and a stuck write
	})
}

func (sp *streamPeer) write(wrote chan<- struct{}) {
	defer close(wrote)
	for {
		select {
		case <-sp.done:
			return
		case b := <-sp.q:
			if err := sp.c.SetWriteDeadline(time.Now().Add(streamWrite)); err != nil {
				sp.stop()
				return
			}
			if _, err := sp.c.Write(b); err != nil {
				sp.stop()
				return
			}
		}
	}
}

// ServeStream answers rendezvous messages on a TCP connection until it
// closes or idles out. prefix holds bytes the caller already read from c
// (to tell rendezvous from STUN). Replies to peers that talk UDP go out on
// the socket each last spoke on.
func (r *Registry) ServeStream(c net.Conn, prefix []byte) {
	from := netaddr.AddrPort(c.RemoteAddr())
	sp := &streamPeer{c: c, q: make(chan []byte, streamQueue), done: make(chan struct{})}
	wrote := make(chan struct{})
	go sp.write(wrote)
	r.mu.Lock()
	if r.streams == nil {
		r.streams = map[netip.AddrPort]*streamPeer{}
	}
	r.streams[from] = sp
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		if r.streams[from] == sp {
			delete(r.streams, from)
		}
		r.mu.Unlock()
		sp.stop()
		<-wrote
	}()
	br := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(prefix), c), MaxMessage+2)
	for {
		if err := c.SetReadDeadline(time.Now().Add(streamIdle)); err != nil {
			return
		}
		line, err := br.ReadSlice('\n')
		if err != nil {
			return // closed, idle, or a line over the limit: drop the peer
		}
		r.dispatch(nil, r.handle(bytes.TrimSpace(line), from, nil))
	}
}

// Send writes outgoing messages: to a peer's TCP stream if it has one,
// else from the socket the recipient last spoke on, else on pc (or the
// last UDP socket seen when pc is nil). Delayed ones go out on a timer
// their pairing owns. Errors are dropped: peers retransmit.
func (r *Registry) Send(pc net.PacketConn, outs []Outgoing) {
	if pc != nil {
		r.mu.Lock()
		r.udp = pc
		r.mu.Unlock()
	}
	r.dispatch(pc, outs)
}

func (r *Registry) dispatch(pc net.PacketConn, outs []Outgoing) {
	for _, o := range outs {
		if o.Delay <= 0 || o.owner == nil {
			r.sendOne(pc, o)
			continue
		}
		r.later(pc, o)
	}
}

// later sends o after its delay, unless its pairing expires first.
func (r *Registry) later(pc net.PacketConn, o Outgoing) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := o.owner
	if p.dead {
		return
	}
	if p.timers == nil {
		p.timers = map[*pendingSend]struct{}{}
	}
	ps := &pendingSend{}
	p.timers[ps] = struct{}{}
	r.timers++
	ps.t = time.AfterFunc(min(o.Delay, MaxAlignDelay), func() {
		r.mu.Lock()
		_, live := p.timers[ps]
		if live {
			delete(p.timers, ps)
			r.timers--
		}
		r.mu.Unlock()
		if live {
			r.sendOne(pc, o)
		}
	})
}

func (r *Registry) sendOne(pc net.PacketConn, o Outgoing) {
	r.mu.Lock()
	sp := r.streams[o.To]
	switch {
	case o.via != nil:
		pc = o.via
	case pc == nil:
		pc = r.udp
	}
	r.mu.Unlock()
	if sp != nil {
		sp.enqueue(append(o.Raw[:len(o.Raw):len(o.Raw)], '\n'))
		return
	}
	if pc != nil {
		_, _ = pc.WriteTo(o.Raw, net.UDPAddrFromAddrPort(o.To))
	}
}

// streamConn adapts a TCP connection to the client's datagram exchange:
// one JSON line per message.
type streamConn struct {
	net.Conn
	br *bufio.Reader
}

func (s *streamConn) WriteTo(b []byte, _ net.Addr) (int, error) {
	_ = s.SetWriteDeadline(time.Now().Add(streamWrite))
	return s.Write(append(append([]byte{}, b...), '\n'))
}

func (s *streamConn) ReadFrom(b []byte) (int, net.Addr, error) {
	line, err := s.br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return 0, nil, fmt.Errorf("rendezvous: line over %d bytes", MaxMessage)
		}
		return 0, nil, err
	}
	return copy(b, bytes.TrimSpace(line)), s.RemoteAddr(), nil
}
