package server

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/natlab/natlab/internal/netaddr"
	"github.com/natlab/natlab/internal/ratelimit"
)

// Default per-source limits (see Limits), each with why.
const (
	// DefaultConnsPerSource: a natlab probe opens a handful of TCP
	// connections, a WebRTC client one or two TURN connections; 64 leaves
	// room for a few hundred users behind one carrier-grade NAT address
	// that do so at once, and keeps 1,000 sources under the usual
	// 65,536-descriptor limit.
	DefaultConnsPerSource = 64
	// DefaultBindingRate and DefaultBindingBurst: natlab check sends a
	// few dozen Binding requests in a second or two, a WebRTC client one
	// every few seconds; 200 a second (bursts of 400) serves hundreds of
	// such clients behind one address, and caps what one source gets
	// answered (40,000 a second without it).
	DefaultBindingRate  = 200
	DefaultBindingBurst = 400
	// DefaultTURNRate and DefaultTURNBurst bound TURN requests (Allocate,
	// Refresh, CreatePermission, ChannelBind; relayed data is not
	// counted): a client makes a handful per allocation and refreshes
	// every few minutes.
	DefaultTURNRate  = 50
	DefaultTURNBurst = 100
)

// Limits bound what one source (an IPv4 address or an IPv6 /64) may take
// of the server. Zero fields take the defaults; negative ones disable
// that limit.
type Limits struct {
	// ConnsPerSource caps TCP and TLS connections open at once.
	ConnsPerSource int
	// BindingRate (a second) and BindingBurst bound Binding requests,
	// over UDP and TCP; the excess is dropped unanswered.
	BindingRate  float64
	BindingBurst int
	// TURNRate and TURNBurst bound TURN requests the same way.
	TURNRate  float64
	TURNBurst int
}

func (l Limits) withDefaults() Limits {
	if l.ConnsPerSource == 0 {
		l.ConnsPerSource = DefaultConnsPerSource
	}
	if l.BindingRate == 0 {
		l.BindingRate, l.BindingBurst = DefaultBindingRate, max(l.BindingBurst, DefaultBindingBurst)
	}
	if l.BindingBurst <= 0 {
		l.BindingBurst = max(int(2*l.BindingRate), 1)
	}
	if l.TURNRate == 0 {
		l.TURNRate, l.TURNBurst = DefaultTURNRate, max(l.TURNBurst, DefaultTURNBurst)
	}
	if l.TURNBurst <= 0 {
		l.TURNBurst = max(int(2*l.TURNRate), 1)
	}
	return l
}

// LimitStats count what the per-source limits refused.
type LimitStats struct {
	Binding      uint64 `json:"binding"`       // Binding requests dropped by the rate limit
	TURN         uint64 `json:"turn"`          // TURN requests dropped by the rate limit
	ConnsRefused uint64 `json:"conns_refused"` // TCP/TLS connections over the per-source cap
}

// LimitStats returns what the per-source limits refused so far.
func (s *Server) LimitStats() LimitStats {
	return LimitStats{Binding: s.bindLim.Dropped(), TURN: s.turnLim.Dropped(), ConnsRefused: s.connLim.refused.Load()}
}

// isTURNRequest reports whether a TURN frame is a STUN request (rate
// limited), not data.
func isTURNRequest(b []byte) bool {
	return len(b) >= headerSize && b[0]&0xC0 == 0 && b[0]&0x01 == 0 && b[1]&0x10 == 0
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
	k := ratelimit.Source(netaddr.AddrPort(c.RemoteAddr()).Addr())
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
