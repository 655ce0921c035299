package holepunch

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/natlab/natlab/internal/netaddr"
)

// Path is a confirmed direct UDP path. Until Detach or Close it keeps
// answering the peer's pings, so a peer that confirms later still gets its
// pong.
type Path struct {
	// Result is the measurement of the punch that found this path.
	Result Result

	conn   net.PacketConn
	remote netip.AddrPort
	sess   Session

	once sync.Once
	stop chan struct{}
	done chan struct{}
}

func newPath(r Result, conn net.PacketConn, sess Session) *Path {
	p := &Path{Result: r, conn: conn, remote: r.Remote, sess: sess, stop: make(chan struct{}), done: make(chan struct{})}
	go p.respond()
	return p
}

// Remote is the peer's address on the path.
func (p *Path) Remote() netip.AddrPort { return p.remote }

func (p *Path) respond() {
	defer close(p.done)
	buf := make([]byte, readBuf)
	var out []byte
	for {
		n, addr, err := p.conn.ReadFrom(buf)
		if err != nil {
			select {
			case <-p.stop:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		m, err := p.sess.unmarshal(buf[:n])
		if err != nil || m.side != p.sess.Side.Other() || m.typ != msgPing {
			continue
		}
		from := netaddr.AddrPort(addr)
		out = p.sess.marshal(out[:0], probe{typ: msgPong, confirmed: true, side: p.sess.Side, nonce: m.nonce, observed: from})
		_, _ = p.conn.WriteTo(out, net.UDPAddrFromAddrPort(from))
	}
}

func (p *Path) halt() {
	p.once.Do(func() {
		close(p.stop)
		_ = p.conn.SetReadDeadline(time.Now())
		<-p.done
		_ = p.conn.SetReadDeadline(time.Time{})
	})
}

// Detach stops answering pings and hands the socket to the caller, who
// then owns it.
func (p *Path) Detach() net.PacketConn {
	p.halt()
	return p.conn
}

// Close stops answering pings and closes the socket.
func (p *Path) Close() error {
	p.halt()
	return p.conn.Close()
}
