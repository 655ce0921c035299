package server

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/natlab/natlab/internal/netaddr"
)

// Default per-source limits (see Limits), each with why.
const (
	// DefaultConnsPerSource: a natlab probe opens a handful of TCP
	// connections, a WebRTC client one or two TURN connections; 64 leaves
	// room for a few hundred users behind one carrier-grade NAT address
	// that do so at once, and keeps 1,000 sources under the usual
	// 65,536-descriptor limit.
	DefaultConnsPerSource = 64
)

// Limits bound what one source (an IPv4 address or an IPv6 /64) may take
// of the server. Zero fields take the defaults; negative ones disable
// that limit.
type Limits struct {
	// ConnsPerSource caps TCP and TLS connections open at once.
	ConnsPerSource int
}

func (l Limits) withDefaults() Limits {
	if l.ConnsPerSource == 0 {
		l.ConnsPerSource = DefaultConnsPerSource
	}
	return l
}

// Accept back-off, as net/http's: a failing accept (EMFILE, ENFILE,
// ENOBUFS) fails again at once, so the loop pauses, doubling from
// acceptDelayMin to acceptDelayMax, instead of spinning or giving up.
const (
	acceptDelayMin = 5 * time.Millisecond
	acceptDelayMax = time.Second
)

// acceptPause waits the next back-off step after a failed accept; false
// means done closed meanwhile. *delay carries the step between calls and
// is reset by the caller after a success.
func acceptPause(done <-chan struct{}, delay *time.Duration) bool {
	if *delay == 0 {
		*delay = acceptDelayMin
	} else {
		*delay = min(2**delay, acceptDelayMax)
	}
	t := time.NewTimer(*delay)
	defer t.Stop()
	select {
	case <-done:
		return false
	case <-t.C:
		return true
	}
}

// sourceKey is what per-source limits count by: the IPv4 address, or the
// IPv6 /64 (one host, or one home, usually holds a whole /64).
func sourceKey(ip netip.Addr) netip.Addr {
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.Addr()
	}
	return ip
}

// connLimiter caps the TCP and TLS connections one source holds open at
// once (STUN, TURN and rendezvous together).
type connLimiter struct {
	max     int // <= 0: unlimited
	mu      sync.Mutex
	open    map[netip.Addr]int
	refused atomic.Uint64
}

func newConnLimiter(max int) *connLimiter {
	return &connLimiter{max: max, open: map[netip.Addr]int{}}
}

// admit counts c against its source and returns it wrapped so that
// closing it releases the count; over the cap it closes c and returns
// false.
func (l *connLimiter) admit(c net.Conn) (net.Conn, bool) {
	if l.max <= 0 {
		return c, true
	}
	k := sourceKey(netaddr.AddrPort(c.RemoteAddr()).Addr())
	l.mu.Lock()
	if l.open[k] >= l.max {
		l.mu.Unlock()
		l.refused.Add(1)
		_ = c.Close()
		return nil, false
	}
	l.open[k]++
	l.mu.Unlock()
	return &countedConn{Conn: c, l: l, k: k}, true
}

func (l *connLimiter) release(k netip.Addr) {
	l.mu.Lock()
	if l.open[k]--; l.open[k] <= 0 {
		delete(l.open, k)
	}
	l.mu.Unlock()
}

// countedConn releases its source's count once, on the first Close.
type countedConn struct {
	net.Conn
	l    *connLimiter
	k    netip.Addr
	once sync.Once
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.k) })
	return err
}
