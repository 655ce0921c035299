package server

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/transport/v4"
	"golang.org/x/net/ipv4"

	"github.com/natlab/natlab/internal/netaddr"
	"github.com/natlab/natlab/internal/opslog"
	"github.com/natlab/natlab/internal/ratelimit"
	"github.com/natlab/natlab/rendezvous"
)

// DefaultSoftware is the SOFTWARE attribute natlab's server sends.
const DefaultSoftware = "natlab"

// tcpIdleTimeout closes a TCP connection that sends nothing: a Binding
// exchange takes one round trip, so 30 s only keeps slow clients, not idle ones.
const tcpIdleTimeout = 30 * time.Second

// tcpWriteTimeout bounds a response write, so a client that stops reading
// cannot hold a goroutine.
const tcpWriteTimeout = 5 * time.Second

// readBufferSize fits any UDP datagram a path MTU allows, and TURN's
// ChannelData up to pion/turn's inbound MTU of 1600 bytes; larger STUN
// requests are not legitimate Binding requests.
const readBufferSize = 1600

// Config configures a Server.
type Config struct {
	// Addrs is the address plan. With Primary's port 0 a free port is
	// chosen (and reused on the alternate IP).
	Addrs Addrs
	// Software is sent in the SOFTWARE attribute; "" sends DefaultSoftware.
	Software string
	// Logger receives start-up notes and errors; nil discards them.
	Logger *slog.Logger
	// Rendezvous, if set, answers natlab's pairing datagrams on the same
	// UDP sockets (they start with '{', which STUN never does).
	Rendezvous *rendezvous.Registry
	// TURN, if set, also serves a TURN relay (pion/turn) on the same UDP
	// sockets and TCP listener: Binding requests stay with the RFC 5780
	// handler, every other STUN method and ChannelData go to TURN.
	TURN *TURNConfig
	// Limits are the per-source limits; the zero value takes the defaults.
	Limits Limits
	// RequireTCP makes Listen fail when the primary's TCP port cannot be
	// opened; by default the server then runs over UDP only (a lab
	// network without TCP, say).
	RequireTCP bool
}

// ErrTCPUnavailable is returned by Listen with Config.RequireTCP when the
// primary's TCP port cannot be opened.
var ErrTCPUnavailable = errors.New("TCP unavailable")

// Stats are the server's counters since start; a metrics exporter reads them.
type Stats struct {
	Requests     uint64 `json:"requests"`      // STUN requests received (UDP and TCP)
	Responses    uint64 `json:"responses"`     // success responses sent
	Errors       uint64 `json:"errors"`        // error responses sent (400, 420)
	Dropped      uint64 `json:"dropped"`       // datagrams ignored: not STUN, responses, indications, bad FINGERPRINT
	SendFailures uint64 `json:"send_failures"` // responses the network refused to send
}

// Server is a running STUN server. Close stops it.
type Server struct {
	addrs   Addrs
	h       *Handler
	rz      *rendezvous.Registry
	log     *slog.Logger
	ops     *opslog.Log // refusals and drops, rate-limited
	net     transport.Net
	conns   map[netip.AddrPort]net.PacketConn
	tcp     net.Listener                    // the primary socket's TCP listener
	tcpAlt  map[netip.AddrPort]net.Listener // the other sockets' (TCP behaviour tests)
	tcpErr  error
	cb      *connectBackLimiter
	closing chan struct{}
	once    sync.Once
	wg      sync.WaitGroup

	mu       sync.Mutex
	tcpConns map[net.Conn]struct{}
	turn     *turnRelay // nil without TURN
	limits   Limits
	connLim  *connLimiter
	bindLim  *ratelimit.Limiter
	turnLim  *ratelimit.Limiter
	jobs     chan bindingJob

	requests, responses, errors, dropped, sendFailures atomic.Uint64
}

// Listen opens the sockets of cfg.Addrs on n (UDP on every socket of the
// plan, TCP on the primary one if n supports it) and starts serving.
func Listen(n transport.Net, cfg Config) (*Server, error) {
	a := cfg.Addrs
	if !a.Primary.Addr().IsValid() {
		return nil, errors.New("stun server: no listen address")
	}
	if a.AltIP.IsValid() && a.Primary.Addr().IsUnspecified() {
		return nil, fmt.Errorf("stun server: listen address %s must be a specific IP when an alternate IP is given (RFC 5780 tells clients which IP answered)", a.Primary.Addr())
	}
	if a.AltIP.IsValid() && (a.AltIP == a.Primary.Addr() || a.AltIP.Is4() != a.Primary.Addr().Is4()) {
		return nil, fmt.Errorf("stun server: alternate IP %s must differ from %s and be of the same family", a.AltIP, a.Primary.Addr())
	}
	if a.AltPort != 0 && a.AltPort == a.Primary.Port() {
		return nil, fmt.Errorf("stun server: alternate port %d equals the primary port", a.AltPort)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	sw := cfg.Software
	if sw == "" {
		sw = DefaultSoftware
	}
	s := &Server{net: n, log: log, ops: opslog.New(log), rz: cfg.Rendezvous, conns: map[netip.AddrPort]net.PacketConn{}, closing: make(chan struct{}), tcpConns: map[net.Conn]struct{}{}}
	s.limits = cfg.Limits.withDefaults()
	s.connLim = newConnLimiter(s.limits.ConnsPerSource)
	s.bindLim = ratelimit.New(s.limits.BindingRate, s.limits.BindingBurst)
	s.turnLim = ratelimit.New(s.limits.TURNRate, s.limits.TURNBurst)

	network := udpNetwork(a.Primary.Addr())
	first, err := n.ListenPacket(network, a.Primary.String())
	if err != nil {
		return nil, fmt.Errorf("stun server: listen udp %s: %w", a.Primary, bareNetErr(err))
	}
	if a.Primary.Port() == 0 {
		a.Primary = netip.AddrPortFrom(a.Primary.Addr(), netaddr.AddrPort(first.LocalAddr()).Port())
	}
	s.addrs = a
	s.h = NewHandler(a, sw)
	s.conns[a.Primary] = first
	growReadBuffer(first)
	for _, ap := range a.Sockets()[1:] {
		c, err := n.ListenPacket(network, ap.String())
		if err != nil {
			s.closeConns()
			return nil, fmt.Errorf("stun server: listen udp %s: %w", ap, bareNetErr(err))
		}
		s.conns[ap] = c
		growReadBuffer(c)
	}
	s.listenTCP(n, tcpNetwork(a.Primary.Addr()))
	if s.tcpErr != nil {
		if cfg.RequireTCP {
			s.closeConns()
			s.closeTCP()
			return nil, fmt.Errorf("stun server: %w: %w", ErrTCPUnavailable, s.tcpErr)
		}
		log.Warn("serving STUN over UDP only", "reason", s.tcpErr)
	}
	if cfg.TURN != nil {
		if err := s.startTURN(n, *cfg.TURN); err != nil {
			s.closeConns()
			s.closeTCP()
			return nil, err
		}
	}
	s.jobs = make(chan bindingJob, bindingQueue)
	for range bindingWorkers() {
		s.wg.Add(1)
		go s.answerBindings()
	}
	for ap, c := range s.conns {
		s.wg.Add(1)
		go s.serveUDP(ap, c)
	}
	if s.tcp != nil {
		s.wg.Add(1)
		go s.acceptTCP(s.tcp, a.Primary)
	}
	for ap, ln := range s.tcpAlt {
		s.wg.Add(1)
		go s.acceptTCP(ln, ap)
	}
	log.Info("STUN server listening", "plan", a.String(), "tcp", s.tcp != nil)
	for _, u := range a.Unsupported() {
		log.Warn("RFC 5780 test not supported", "test", u)
	}
	return s, nil
}

// udpNetwork and tcpNetwork name ip's family for Listen: each Server
// serves one family (`natlab serve` runs one per family it is given).
func udpNetwork(ip netip.Addr) string {
	if ip.Is4() || ip.Is4In6() {
		return "udp4"
	}
	return "udp6"
}

func tcpNetwork(ip netip.Addr) string {
	if ip.Is4() || ip.Is4In6() {
		return "tcp4"
	}
	return "tcp6"
}

// Addrs is the address plan being served (with chosen ports filled in).
func (s *Server) Addrs() Addrs { return s.addrs }

// Handler is the server's binding handler.
func (s *Server) Handler() *Handler { return s.h }

// TCPError is nil when Binding over TCP is served, else why not.
func (s *Server) TCPError() error { return s.tcpErr }

// TURNStats returns the relay's counters; ok is false without TURN.
func (s *Server) TURNStats() (st TURNStats, ok bool) {
	if s.turn == nil {
		return TURNStats{}, false
	}
	return s.turn.stats(), true
}

// TURNTLSAddr is the TLS listener's address, if TURN over TLS is served.
func (s *Server) TURNTLSAddr() (netip.AddrPort, bool) {
	if s.turn == nil || s.turn.tls == nil {
		return netip.AddrPort{}, false
	}
	return netaddr.AddrPort(s.turn.tls.Addr()), true
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	return Stats{
		Requests: s.requests.Load(), Responses: s.responses.Load(), Errors: s.errors.Load(),
		Dropped: s.dropped.Load(), SendFailures: s.sendFailures.Load(),
	}
}

// Close stops the server and waits for its goroutines. It is safe to call
// more than once.
func (s *Server) Close() error {
	var err error
	s.once.Do(func() {
		close(s.closing)
		if s.turn != nil {
			err = s.turn.close()
		}
		err = errors.Join(err, s.closeConns())
		err = errors.Join(err, s.closeTCP())
		s.mu.Lock()
		for c := range s.tcpConns {
			_ = c.Close() // unblock its reader; the error says nothing useful
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return err
}

// Serve runs until ctx ends, then closes the server.
func (s *Server) Serve(ctx context.Context) error {
	select {
	case <-ctx.Done():
	case <-s.closing:
	}
	return s.Close()
}

func (s *Server) turnDemux(local netip.AddrPort) *demuxSet {
	if s.turn == nil {
		return nil
	}
	return s.turn.demux[local]
}

func (s *Server) closeConns() error {
	var err error
	for _, c := range s.conns {
		if e := c.Close(); e != nil && !errors.Is(e, net.ErrClosed) {
			err = errors.Join(err, e)
		}
	}
	return err
}

func (s *Server) isClosing() bool {
	select {
	case <-s.closing:
		return true
	default:
		return false
	}
}

func (s *Server) count(rep Reply) {
	switch {
	case rep.Raw == nil:
		s.dropped.Add(1)
	case rep.Error:
		s.requests.Add(1)
		s.errors.Add(1)
	default:
		s.requests.Add(1)
		s.responses.Add(1)
	}
}

func (s *Server) serveUDP(local netip.AddrPort, c net.PacketConn) {
	defer s.wg.Done()
	if uc, ok := c.(*net.UDPConn); ok {
		s.serveUDPBatch(local, uc)
		return
	}
	bp := bufPool.Get().(*[]byte)
	defer func() { bufPool.Put(bp) }()
	for {
		buf := *bp
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			if s.isClosing() || errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Debug("udp read", "socket", local, "err", err)
			continue
		}
		if s.route(buf[:n], from, local, c) {
			continue
		}
		select {
		case s.jobs <- bindingJob{buf: bp, n: n, from: from, local: local, c: c}:
			bp = bufPool.Get().(*[]byte)
		default:
			s.answer(buf[:n], from, local, c)
		}
	}
}

// route handles a datagram that is not for the Binding handler
// (rendezvous, TURN) or is over its source's rate limit; false means it is
// a Binding request to answer.
func (s *Server) route(b []byte, from net.Addr, local netip.AddrPort, c net.PacketConn) bool {
	src := netaddr.AddrPort(from)
	if s.rz != nil && rendezvous.IsRendezvous(b) {
		s.rz.HandleFrom(c, b, src)
		return true
	}
	if d := s.turnDemux(local); d != nil && isTURN(b) {
		if isTURNRequest(b) && !s.turnLim.Allow(src.Addr()) {
			s.ops.Event(slog.LevelWarn, "turn-rate-limit", "TURN request dropped: source over its rate limit", "from", src.Addr())
			return true
		}
		if d.fast.fromClient(b, src, nil) {
			return true
		}
		v := s.turn.inspect(b, src)
		if v.bind != nil && v.pass {
			d.fast.expect(src, v.bind)
		}
		switch {
		case v.fwd != nil:
			d.push(v.fwd, from)
		case v.pass:
			d.push(b, from)
		}
		if v.reply != nil {
			_, _ = c.WriteTo(v.reply, from)
		}
		return true
	}
	if !s.bindLim.Allow(src.Addr()) {
		s.ops.Event(slog.LevelWarn, "binding-rate-limit", "Binding request dropped: source over its rate limit", "from", src.Addr())
		return true
	}
	return false
}

// udpReadBuffer is the receive buffer asked for each UDP socket: under a
// flood the read loop falls behind for milliseconds at a time (a GC, a
// busy core), and the kernel's default (208 KiB, about 270 small
// datagrams) then drops legitimate requests with the flood. Linux caps
// it at net.core.rmem_max, which operators should raise to match.
const udpReadBuffer = 4 << 20

func growReadBuffer(c net.PacketConn) {
	if rb, ok := c.(interface{ SetReadBuffer(int) error }); ok {
		_ = rb.SetReadBuffer(udpReadBuffer) // best effort: the kernel caps it
	}
}

// readBatch is how many datagrams one recvmmsg call may return.
const readBatch = 32

// serveUDPBatch is serveUDP for a kernel socket: it reads up to readBatch
// datagrams per system call, answers the batch's Binding requests itself
// and sends those answers together (see replyBatch).
func (s *Server) serveUDPBatch(local netip.AddrPort, uc *net.UDPConn) {
	pc := newBatchConn(uc)
	msgs := make([]ipv4.Message, readBatch)
	bufs := make([]*[]byte, readBatch)
	for i := range msgs {
		bufs[i] = bufPool.Get().(*[]byte)
		msgs[i].Buffers = [][]byte{*bufs[i]}
	}
	defer func() {
		for _, b := range bufs {
			bufPool.Put(b)
		}
	}()
	out := newReplyBatch()
	relayOut := newBatchOut(readBatch)
	fast := s.turnDemux(local)
	for {
		n, err := pc.ReadBatch(msgs, 0)
		if err != nil {
			if s.isClosing() || errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Debug("udp read", "socket", local, "err", err)
			continue
		}
		for i := range n {
			b, from := (*bufs[i])[:msgs[i].N], msgs[i].Addr
			if fast != nil && fast.fast.fromClient(b, netaddr.AddrPort(from), relayOut) {
				continue
			}
			if s.route(b, from, local, uc) {
				continue
			}
			rep := s.h.handle(out.buf(), b, netaddr.AddrPort(from), local, false)
			s.count(rep)
			switch {
			case rep.Raw == nil:
			case rep.From == local:
				out.add(rep)
			default: // CHANGE-REQUEST: another socket sends it
				s.send(rep, uc)
			}
		}
		relayOut.flush()
		s.flush(pc, &out)
	}
}

// replyBatch collects a read batch's Binding responses that leave from the
// reading socket, to send them with one sendmmsg: under load that is one
// system call for up to readBatch responses, and no hand-off to another
// goroutine.
type replyBatch struct {
	msgs  []ipv4.Message
	addrs []net.UDPAddr
	bufs  [][]byte
	n     int
}

func newReplyBatch() replyBatch {
	b := replyBatch{msgs: make([]ipv4.Message, readBatch), addrs: make([]net.UDPAddr, readBatch), bufs: make([][]byte, readBatch)}
	for i := range b.msgs {
		b.bufs[i] = make([]byte, 0, successCap)
		b.msgs[i].Buffers = make([][]byte, 1)
		b.addrs[i].IP = make(net.IP, 16)
	}
	return b
}

// buf is where the next response is encoded.
func (b *replyBatch) buf() []byte { return b.bufs[b.n][:0] }

func (b *replyBatch) add(rep Reply) {
	a := &b.addrs[b.n]
	ip := rep.To.Addr()
	if ip.Is4() {
		v := ip.As4()
		a.IP = append(a.IP[:0], v[:]...)
	} else {
		v := ip.As16()
		a.IP = append(a.IP[:0], v[:]...)
	}
	a.Port = int(rep.To.Port())
	b.msgs[b.n].Buffers[0] = rep.Raw
	b.msgs[b.n].Addr = a
	b.n++
}

// flush sends the collected responses and empties the batch.
func (s *Server) flush(pc batchConn, b *replyBatch) {
	for sent := 0; sent < b.n; {
		k, err := pc.WriteBatch(b.msgs[sent:b.n], 0)
		if err != nil {
			s.sendFailures.Add(uint64(b.n - sent))
			s.log.Debug("udp write", "err", err)
			break
		}
		if k == 0 {
			s.sendFailures.Add(uint64(b.n - sent))
			break
		}
		sent += k
	}
	b.n = 0
}

// acceptTCP serves the TCP listener of the plan's socket local.
func (s *Server) acceptTCP(ln net.Listener, local netip.AddrPort) {
	defer s.wg.Done()
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.isClosing() || errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Debug("tcp accept", "err", err)
			if !acceptPause(s.closing, &delay) {
				return
			}
			continue
		}
		delay = 0
		from := c.RemoteAddr()
		c, ok := s.connLim.admit(c)
		if !ok {
			s.ops.Event(slog.LevelWarn, "tcp-conn-limit", "TCP connection refused: too many from one source", "from", from, "limit", s.limits.ConnsPerSource)
			continue
		}
		s.mu.Lock()
		if s.isClosing() {
			s.mu.Unlock()
			_ = c.Close()
			return
		}
		s.tcpConns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveTCP(c, local)
	}
}

// serveTCP answers RFC 5389-framed messages on one connection until the
// client closes it, goes idle, or sends something that is not STUN.
func (s *Server) serveTCP(c net.Conn, local netip.AddrPort) {
	defer s.wg.Done()
	handedOff := false
	defer func() {
		s.mu.Lock()
		delete(s.tcpConns, c)
		s.mu.Unlock()
		if !handedOff {
			_ = c.Close()
		}
	}()
	from := netaddr.AddrPort(c.RemoteAddr())
	from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	buf := make([]byte, maxMessageSize)
	for {
		if err := c.SetReadDeadline(time.Now().Add(tcpIdleTimeout)); err != nil {
			return
		}
		if _, err := io.ReadFull(c, buf[:headerSize]); err != nil {
			return
		}
		if s.rz != nil && rendezvous.IsRendezvous(buf[:headerSize]) {
			// A pairing peer whose UDP is blocked: the connection is
			// the rendezvous's from here on.
			s.rz.ServeStream(c, buf[:headerSize])
			return
		}
		size := headerSize + int(binary.BigEndian.Uint16(buf[2:4]))
		if size > len(buf) {
			s.dropped.Add(1)
			return
		}
		if _, err := io.ReadFull(c, buf[headerSize:size]); err != nil {
			return
		}
		if flags, ok := connectBackFlags(buf[:size]); ok {
			if !s.connectBack(c, buf[:size], flags, from, local) {
				return
			}
			continue
		}
		if s.turn != nil && local == s.addrs.Primary && isTURN(buf[:size]) {
			// From here on the connection is TURN's: pion/turn reads it
			// (through the peer policy) and closes it.
			handedOff = s.turn.handoff(c, buf[:size])
			return
		}
		if !s.bindLim.Allow(from.Addr()) {
			s.ops.Event(slog.LevelWarn, "binding-rate-limit", "Binding request dropped: source over its rate limit", "from", from.Addr())
			continue // over the rate: unanswered, as on UDP
		}
		rep := s.h.HandleStream(buf[:size], from, local)
		s.count(rep)
		if rep.Raw == nil {
			return // not STUN: the stream cannot be resynchronised
		}
		if err := c.SetWriteDeadline(time.Now().Add(tcpWriteTimeout)); err != nil {
			return
		}
		if _, err := c.Write(rep.Raw); err != nil {
			s.sendFailures.Add(1)
			return
		}
	}
}

// bindingWorkers is how many goroutines answer Binding requests read one
// at a time (sockets other than IPv4 kernel sockets): one per CPU, so the
// answers use every core, as coturn's threads do. Each socket keeps a
// single reader, so TURN datagrams are relayed in the order they came.
// The batch reader answers inline instead: with recvmmsg and sendmmsg two
// system calls serve a whole batch, which costs less than waking a worker
// per request.
func bindingWorkers() int { return runtime.GOMAXPROCS(0) }

// bindingQueue is how many Binding requests wait for a worker; when it is
// full the reader answers itself.
const bindingQueue = 256

// bindingJob is one Binding request for a worker.
type bindingJob struct {
	buf   *[]byte
	n     int
	from  net.Addr
	local netip.AddrPort
	c     net.PacketConn
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, readBufferSize); return &b }}

// outPool holds buffers for encoding Binding responses.
var outPool = sync.Pool{New: func() any { b := make([]byte, 0, successCap); return &b }}

func (s *Server) answerBindings() {
	defer s.wg.Done()
	for {
		select {
		case <-s.closing:
			return
		case j := <-s.jobs:
			s.answer((*j.buf)[:j.n], j.from, j.local, j.c)
			bufPool.Put(j.buf)
		}
	}
}

// answer handles one request read from c and sends the reply, if any.
func (s *Server) answer(b []byte, from net.Addr, local netip.AddrPort, c net.PacketConn) {
	// The response is encoded into a pooled buffer: it is only needed
	// until the write returns.
	op := outPool.Get().(*[]byte)
	defer outPool.Put(op)
	rep := s.h.handle(*op, b, netaddr.AddrPort(from), local, false)
	s.count(rep)
	if rep.Raw == nil {
		return
	}
	s.send(rep, c)
}

// send writes rep from the socket it names (c if the plan has none such).
func (s *Server) send(rep Reply, c net.PacketConn) {
	out := s.conns[rep.From]
	if out == nil { // the handler only names sockets of the plan
		out = c
	}
	var err error
	if uc, ok := out.(*net.UDPConn); ok {
		_, err = uc.WriteToUDPAddrPort(rep.Raw, rep.To) // no net.Addr to allocate
	} else {
		_, err = out.WriteTo(rep.Raw, net.UDPAddrFromAddrPort(rep.To))
	}
	if err != nil {
		s.sendFailures.Add(1)
		s.log.Debug("udp write", "from", rep.From, "to", rep.To, "err", err)
	}
}

// bareNetErr drops the *net.OpError around a listen error, whose text
// repeats the address the caller names already ("listen udp4 IP:PORT:").
func bareNetErr(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err
	}
	return err
}
