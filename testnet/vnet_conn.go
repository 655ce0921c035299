package testnet

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/pion/transport/v4"
)

// defaultRecvBuffer is a socket's receive buffer in bytes: Linux's
// net.core.rmem_default, so bursts overflow where a real host's would.
const defaultRecvBuffer = 212992

// perPacketOverhead is charged against the receive buffer for every queued
// datagram besides its payload, as the kernel charges an skb per packet, so
// a flood of empty datagrams is bounded too.
const perPacketOverhead = 256

// maxUDPPayload is the largest UDP payload IPv4 can carry.
const maxUDPPayload = 65507

// vconn is a UDP socket of an in-process host. It implements
// transport.UDPConn and net.Conn.
type vconn struct {
	host   *vhost
	local  netip.AddrPort // address may be unspecified on a multi-address host
	remote netip.AddrPort // valid when connected

	mu       sync.Mutex
	queue    []packet
	queued   int // bytes charged against limit
	limit    int
	rdl, wdl time.Time
	wake     chan struct{} // closed to wake blocked readers; nil when none wait
	closed   bool
	drops    uint64 // datagrams dropped on a full buffer
}

var (
	_ transport.UDPConn = (*vconn)(nil)
	_ net.PacketConn    = (*vconn)(nil)
	_ net.Conn          = (*vconn)(nil)
)

func udpAddr(ap netip.AddrPort) *net.UDPAddr {
	return &net.UDPAddr{IP: ap.Addr().AsSlice(), Port: int(ap.Port())}
}

// broadcastLocked wakes every blocked reader so it re-examines the state.
func (c *vconn) broadcastLocked() {
	if c.wake != nil {
		close(c.wake)
		c.wake = nil
	}
}

// push queues an arriving datagram, dropping it when the buffer is full or
// when a connected socket gets it from anyone but its peer.
func (c *vconn) push(p packet) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || (c.remote.IsValid() && p.src != c.remote) {
		return
	}
	cost := len(p.payload) + perPacketOverhead
	if c.queued+cost > c.limit {
		c.drops++
		return
	}
	c.queued += cost
	c.queue = append(c.queue, p)
	c.broadcastLocked()
}

func (c *vconn) opErr(op string, err error) error {
	e := &net.OpError{Op: op, Net: "udp", Source: c.LocalAddr(), Err: err}
	if c.remote.IsValid() {
		e.Addr = udpAddr(c.remote)
	}
	return e
}

// readPacket blocks until a datagram, the read deadline or Close.
func (c *vconn) readPacket() (packet, error) {
	c.mu.Lock()
	for {
		if c.closed {
			c.mu.Unlock()
			return packet{}, c.opErr("read", net.ErrClosed)
		}
		dl := c.rdl
		if !dl.IsZero() && !time.Now().Before(dl) {
			c.mu.Unlock()
			return packet{}, c.opErr("read", os.ErrDeadlineExceeded)
		}
		if len(c.queue) > 0 {
			p := c.queue[0]
			c.queue[0] = packet{}
			c.queue = c.queue[1:]
			if len(c.queue) == 0 {
				c.queue = nil
			}
			c.queued -= len(p.payload) + perPacketOverhead
			c.mu.Unlock()
			return p, nil
		}
		if c.wake == nil {
			c.wake = make(chan struct{})
		}
		wake := c.wake
		c.mu.Unlock()
		if dl.IsZero() {
			<-wake
		} else {
			t := time.NewTimer(time.Until(dl))
			select {
			case <-wake:
			case <-t.C:
			}
			t.Stop()
		}
		c.mu.Lock()
	}
}

func (c *vconn) ReadFromUDP(b []byte) (int, *net.UDPAddr, error) {
	p, err := c.readPacket()
	if err != nil {
		return 0, nil, err
	}
	// Like a kernel datagram socket, a short buffer truncates the datagram.
	return copy(b, p.payload), udpAddr(p.src), nil
}

func (c *vconn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, a, err := c.ReadFromUDP(b)
	if err != nil {
		return n, nil, err
	}
	return n, a, nil
}

func (c *vconn) Read(b []byte) (int, error) {
	n, _, err := c.ReadFromUDP(b)
	return n, err
}

func (c *vconn) ReadMsgUDP(b, _ []byte) (n, oobn, flags int, addr *net.UDPAddr, err error) {
	p, err := c.readPacket()
	if err != nil {
		return 0, 0, 0, nil, err
	}
	n = copy(b, p.payload)
	if n < len(p.payload) {
		flags |= msgTrunc
	}
	return n, 0, flags, udpAddr(p.src), nil
}

// write sends b to dst from this socket.
func (c *vconn) write(b []byte, dst netip.AddrPort) (int, error) {
	c.mu.Lock()
	closed, wdl := c.closed, c.wdl
	c.mu.Unlock()
	if closed {
		return 0, c.opErr("write", net.ErrClosed)
	}
	if !wdl.IsZero() && !time.Now().Before(wdl) {
		return 0, c.opErr("write", os.ErrDeadlineExceeded)
	}
	if len(b) > maxUDPPayload {
		return 0, c.opErr("write", os.NewSyscallError("sendto", syscall.EMSGSIZE))
	}
	if dst.Port() == 0 {
		return 0, c.opErr("write", os.NewSyscallError("sendto", syscall.EINVAL))
	}
	p := packet{src: c.host.sourceFor(c.local, dst), dst: dst, payload: append([]byte(nil), b...)}
	c.host.output(p)
	return len(b), nil
}

func (c *vconn) Write(b []byte) (int, error) {
	if !c.remote.IsValid() {
		return 0, c.opErr("write", os.NewSyscallError("sendto", syscall.EDESTADDRREQ))
	}
	return c.write(b, c.remote)
}

func (c *vconn) WriteToUDP(b []byte, addr *net.UDPAddr) (int, error) {
	if c.remote.IsValid() {
		return 0, c.opErr("write", net.ErrWriteToConnected)
	}
	if addr == nil {
		return 0, c.opErr("write", os.NewSyscallError("sendto", syscall.EDESTADDRREQ))
	}
	dst, err := c.host.destination(addr)
	if err != nil {
		return 0, c.opErr("write", err)
	}
	return c.write(b, dst)
}

func (c *vconn) WriteTo(b []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, c.opErr("write", fmt.Errorf("%w: %T", transport.ErrNotUDPAddress, addr))
	}
	return c.WriteToUDP(b, ua)
}

func (c *vconn) WriteMsgUDP(b, oob []byte, addr *net.UDPAddr) (n, oobn int, err error) {
	if c.remote.IsValid() {
		if addr != nil {
			return 0, 0, c.opErr("write", net.ErrWriteToConnected)
		}
		n, err = c.Write(b)
	} else {
		n, err = c.WriteToUDP(b, addr)
	}
	return n, 0, err
}

func (c *vconn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return c.opErr("close", net.ErrClosed)
	}
	c.closed = true
	c.queue, c.queued = nil, 0
	c.broadcastLocked()
	c.mu.Unlock()
	c.host.unbind(c)
	return nil
}

func (c *vconn) LocalAddr() net.Addr { return udpAddr(c.local) }

func (c *vconn) RemoteAddr() net.Addr {
	if !c.remote.IsValid() {
		return nil // an untyped nil, not a nil *net.UDPAddr
	}
	return udpAddr(c.remote)
}

func (c *vconn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rdl, c.wdl = t, t
	c.broadcastLocked()
	return nil
}

func (c *vconn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rdl = t
	c.broadcastLocked()
	return nil
}

func (c *vconn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.wdl = t
	return nil
}

// SetReadBuffer resizes the receive buffer; queued datagrams stay.
func (c *vconn) SetReadBuffer(bytes int) error {
	if bytes <= 0 {
		return c.opErr("set", os.NewSyscallError("setsockopt", syscall.EINVAL))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.limit = bytes
	return nil
}

// SetWriteBuffer is accepted and ignored: writes never queue in the lab.
func (c *vconn) SetWriteBuffer(bytes int) error {
	if bytes <= 0 {
		return c.opErr("set", os.NewSyscallError("setsockopt", syscall.EINVAL))
	}
	return nil
}

// Dropped reports how many datagrams the socket dropped on a full receive
// buffer; tests reach it through a type assertion.
func (c *vconn) Dropped() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.drops
}

// errAddrInUse and errAddrNotAvail mirror the kernel's bind errors, so
// callers can test them with errors.Is(err, syscall.EADDRINUSE).
var (
	errAddrInUse    = os.NewSyscallError("bind", syscall.EADDRINUSE)
	errAddrNotAvail = os.NewSyscallError("bind", syscall.EADDRNOTAVAIL)
)

// errNoDNS is returned for host names: the lab has no resolver, and a
// lookup must never reach the machine's real one.
var errNoDNS = fmt.Errorf("no DNS in the in-process lab, use IP literals: %w", ErrNotSupported)
