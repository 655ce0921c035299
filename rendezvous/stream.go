package rendezvous

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/natlab/natlab/internal/netaddr"
)

// Over TCP (for hosts whose UDP is blocked) the same messages travel as
// JSON lines on one connection to the server's TCP port. The server tells
// them from STUN over TCP by the first byte, as on UDP.

// Stream timing, each with why.
const (
	// streamIdle closes a rendezvous connection nobody speaks on: a
	// waiting client polls at least every maxRTO.
	streamIdle = 30 * time.Second
	// streamWrite bounds one write to a slow or dead peer.
	streamWrite = 5 * time.Second
)

// ServeStream answers rendezvous messages on a TCP connection until it
// closes or idles out. prefix holds bytes the caller already read from c
// (to tell rendezvous from STUN). Replies to peers that talk UDP go out on
// the last UDP socket a datagram came in on.
func (r *Registry) ServeStream(c net.Conn, prefix []byte) {
	from := netaddr.AddrPort(c.RemoteAddr())
	r.mu.Lock()
	if r.streams == nil {
		r.streams = map[netip.AddrPort]net.Conn{}
	}
	r.streams[from] = c
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		if r.streams[from] == c {
			delete(r.streams, from)
		}
		r.mu.Unlock()
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
		r.dispatch(nil, r.Handle(bytes.TrimSpace(line), from))
	}
}

// Send writes outgoing messages: to a peer's TCP stream if it has one,
// else on pc (or the last UDP socket seen when pc is nil). Delayed ones go
// out on a timer. Errors are dropped: peers retransmit.
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
		o := o
		send := func() { r.sendOne(pc, o) }
		if o.Delay > 0 {
			time.AfterFunc(o.Delay, send)
		} else {
			send()
		}
	}
}

func (r *Registry) sendOne(pc net.PacketConn, o Outgoing) {
	r.mu.Lock()
	sc := r.streams[o.To]
	if pc == nil {
		pc = r.udp
	}
	r.mu.Unlock()
	if sc != nil {
		_ = sc.SetWriteDeadline(time.Now().Add(streamWrite))
		_, _ = sc.Write(append(o.Raw, '\n'))
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
