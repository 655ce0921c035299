package holepunch

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pion/transport/v4"

	"github.com/natlab/natlab/internal/netaddr"
	"github.com/natlab/natlab/internal/sockopt"
	"github.com/natlab/natlab/natclass"
)

const (
	// DefaultTCPTimeout bounds a TCP simultaneous open: five seconds of
	// connect attempts is as many SYNs as the UDP punch sends probes, and
	// a pair that is not connected by then will not be.
	DefaultTCPTimeout = 5 * time.Second
	// tcpRetryGap paces connect attempts that fail at once (refused,
	// unreachable, port busy because the listener took the connection):
	// a SYN every 250 ms is as eager as the UDP schedule's steady state.
	// An attempt that does not fail at once runs to the deadline, letting
	// the kernel retransmit the SYN on the same 4-tuple: closing and
	// reconnecting would change the sequence number under a SYN-ACK that
	// is already on its way.
	tcpRetryGap = 250 * time.Millisecond
	// tcpHandshakeTimeout bounds the authenticated ping/pong on a new
	// connection: it is a round trip on an established stream.
	tcpHandshakeTimeout = 2 * time.Second
)

// TCPConfig configures PunchTCP.
type TCPConfig struct {
	// Net opens the listener and the connecting sockets; it must support
	// TCP with a Control function (the real stack, the kernel lab).
	Net     transport.Net
	Session Session
	// LocalPort is the port both the listener and the connect attempts
	// bind (a free one when 0; read it from Result.Local or pick it before
	// telling the peer).
	LocalPort uint16
	// Listener, if set, is a listener already bound with ReuseControl on
	// the port to use; PunchTCP owns it. It lets the caller learn the port
	// before the candidates are exchanged.
	Listener net.Listener
	// Remote are the peer's TCP candidates: behind an endpoint-independent
	// NAT that keeps ports, its public address with its local port.
	Remote []Candidate
	// There is no OpeningTTL for TCP, on purpose:
	// on Linux the ICMP time exceeded of a low-TTL SYN aborts the connect,
	// and the next SYN comes from a new socket with a new sequence number,
	// which the router's conntrack (still holding the first SYN's window)
	// marks invalid, so the answer leaves un-NATed. Measured on the kernel
	// lab: every EIM pair failed with it, succeeded without it.

	// Timeout bounds the punch (DefaultTCPTimeout when 0).
	Timeout time.Duration
	Logger  *slog.Logger
}

// ReuseControl sets SO_REUSEADDR and SO_REUSEPORT (SO_REUSEADDR alone on
// Windows), so a listener and connecting sockets can share one local port:
// a simultaneous open needs the SYNs to leave from the port the peer was
// told about.
func ReuseControl(network, address string, c syscall.RawConn) error {
	return sockopt.Reuse(network, address, c)
}

// ListenTCP opens the listener for PunchTCP on port (0: any free port) with
// ReuseControl, so the caller can hand its port to the peer first (IPv4).
func ListenTCP(ctx context.Context, n transport.Net, port uint16) (net.Listener, error) {
	return ListenTCPFor(ctx, n, netip.IPv4Unspecified(), port)
}

// ListenTCPFor is ListenTCP for the address family of peer (a punch over
// IPv6 listens on [::]).
func ListenTCPFor(ctx context.Context, n transport.Net, peer netip.Addr, port uint16) (net.Listener, error) {
	lc := &net.ListenConfig{Control: ReuseControl}
	wild := netip.IPv4Unspecified()
	network := tcpNetwork(peer)
	if network == "tcp6" {
		wild = netip.IPv6Unspecified()
	}
	ln, err := n.CreateListenConfig(lc).Listen(ctx, network, netip.AddrPortFrom(wild, port).String())
	if err != nil {
		return nil, fmt.Errorf("tcp listen on port %d: %w", port, err)
	}
	return ln, nil
}

// PunchTCP connects to the peer by TCP simultaneous open: it listens on its
// port and, from the same port, keeps connecting to every peer candidate
// with short attempts; the first connection that completes the
// authenticated ping/pong wins. On failure every socket is closed and the
// error wraps ErrNoPath (or the lab's "not supported" error for a Net
// without TCP).
func PunchTCP(ctx context.Context, cfg TCPConfig) (net.Conn, Result, error) {
	res := Result{Technique: natclass.DirectTCP}
	start := time.Now()
	fail := func(err error) (net.Conn, Result, error) {
		res.Err = err
		res.Duration = time.Since(start)
		return nil, res, err
	}
	if err := cfg.Session.valid(); err != nil {
		if cfg.Listener != nil {
			_ = cfg.Listener.Close()
		}
		return fail(err)
	}
	timeout := cmp.Or(cfg.Timeout, DefaultTCPTimeout)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ln := cfg.Listener
	if ln == nil {
		var err error
		if ln, err = ListenTCPFor(ctx, cfg.Net, firstAddr(cfg.Remote), cfg.LocalPort); err != nil {
			return fail(err)
		}
	}
	local := netaddr.AddrPort(ln.Addr())
	res.Local = local
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := &tcpPunch{cfg: cfg, start: start, log: log, conns: make(chan net.Conn)}
	var wg sync.WaitGroup
	wg.Go(func() { t.accept(ctx, ln) })
	for _, c := range cfg.Remote {
		wg.Go(func() { t.dial(ctx, local.Port(), c.Addr) })
	}
	var winner net.Conn
	for winner == nil {
		select {
		case <-ctx.Done():
		case c := <-t.conns:
			if err := t.handshake(ctx, c, &res); err != nil {
				log.Debug("tcp handshake failed", "remote", c.RemoteAddr(), "err", err)
				_ = c.Close()
				continue
			}
			winner = c
		}
		if winner == nil && ctx.Err() != nil {
			break
		}
	}
	cancel()
	_ = ln.Close()
	// Drain connections made while we were deciding, then wait for every
	// attempt to end (each is bounded by tcpConnectTimeout).
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for {
		select {
		case c := <-t.conns:
			_ = c.Close()
			continue
		case <-done:
		}
		break
	}
	res.Attempts = int(t.attempts.Load())
	res.Duration = time.Since(start)
	if winner == nil {
		return fail(fmt.Errorf("tcp %w after %v and %d connect attempts: %w", ErrNoPath, res.Duration.Round(time.Millisecond), res.Attempts, context.Cause(ctx)))
	}
	res.Success = true
	res.Remote = netaddr.AddrPort(winner.RemoteAddr())
	res.Local = netaddr.AddrPort(winner.LocalAddr())
	return winner, res, nil
}

type tcpPunch struct {
	cfg      TCPConfig
	start    time.Time
	log      *slog.Logger
	conns    chan net.Conn
	attempts atomic.Int64
}

func (t *tcpPunch) offer(ctx context.Context, c net.Conn) {
	select {
	case t.conns <- c:
	case <-ctx.Done():
		_ = c.Close()
	}
}

func (t *tcpPunch) accept(ctx context.Context, ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return // closed by PunchTCP
		}
		t.offer(ctx, c)
	}
}

func (t *tcpPunch) dial(ctx context.Context, port uint16, to netip.AddrPort) {
	deadline, _ := ctx.Deadline()
	for ctx.Err() == nil {
		timeout := time.Until(deadline)
		if timeout <= 0 {
			return
		}
		d := &net.Dialer{LocalAddr: &net.TCPAddr{Port: int(port)}, Timeout: timeout, Control: ReuseControl}
		// transport.Dialer has no DialContext: Cancel is the only way to
		// end an attempt to another candidate once one has won.
		d.Cancel = ctx.Done() //nolint:staticcheck // see above
		t.attempts.Add(1)
		began := time.Now()
		c, err := t.cfg.Net.CreateDialer(d).Dial(tcpNetwork(to.Addr()), to.String())
		if err == nil {
			t.offer(ctx, c)
			return
		}
		t.log.Debug("tcp connect", "to", to, "err", err)
		wait := tcpRetryGap - time.Since(began)
		if wait > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(wait):
			}
		}
	}
}

// handshake runs the authenticated ping/pong over a new stream: both sides
// send a ping, answer the other's, and are done when both happened.
func (t *tcpPunch) handshake(ctx context.Context, c net.Conn, res *Result) error {
	deadline := time.Now().Add(tcpHandshakeTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = c.SetDeadline(deadline)
	defer func() { _ = c.SetDeadline(time.Time{}) }()
	if res.TimeToFirstPacket == 0 {
		res.TimeToFirstPacket = time.Since(t.start)
	}
	sess := t.cfg.Session
	n := newNonce()
	sent := time.Now()
	if _, err := c.Write(sess.marshal(nil, probe{typ: msgPing, side: sess.Side, nonce: n})); err != nil {
		return fmt.Errorf("send ping: %w", err)
	}
	gotPong, answered := false, false
	buf := make([]byte, probeSize)
	for !gotPong || !answered {
		if _, err := io.ReadFull(c, buf); err != nil {
			return fmt.Errorf("read probe: %w", err)
		}
		p, err := sess.unmarshal(buf)
		if err != nil {
			return err
		}
		if p.side != sess.Side.Other() {
			return errors.New("probe from our own side")
		}
		switch p.typ {
		case msgPing:
			out := sess.marshal(nil, probe{typ: msgPong, confirmed: gotPong, side: sess.Side, nonce: p.nonce, observed: netaddr.AddrPort(c.RemoteAddr())})
			if _, err := c.Write(out); err != nil {
				return fmt.Errorf("send pong: %w", err)
			}
			answered = true
		case msgPong:
			if p.nonce != n {
				return errors.New("pong for another ping")
			}
			res.RTT = time.Since(sent)
			res.Mapped = p.observed
			gotPong = true
		}
	}
	return nil
}
