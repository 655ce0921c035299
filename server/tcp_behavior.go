package server

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/pion/stun/v3"
	"github.com/pion/transport/v4"

	"github.com/natlab/natlab/internal/netaddr"
	"github.com/natlab/natlab/internal/sockopt"
)

// TCP NAT behaviour tests (RFC 5382). The mapping test needs nothing new:
// a client connects from one local port to the plan's sockets and compares
// the XOR-MAPPED-ADDRESS of a Binding over each connection. The filtering
// test needs an unsolicited SYN, which RFC 5780 does not define for TCP
// (CHANGE-REQUEST over a stream is answered with 420), so natlab adds one
// comprehension-optional attribute:
//
//   - request: a Binding request over TCP carrying CONNECT-BACK, whose 4-byte
//     value holds CHANGE-REQUEST's flags (0x04 change IP, 0x02 change port).
//   - answer on the same connection: the usual Binding success plus
//     CONNECT-BACK holding (as MAPPED-ADDRESS does) the transport address the
//     server will connect from; or an error response saying why not (400
//     for a change the plan cannot make, 508 when over the rate limit).
//   - then the server opens a new TCP connection from that address to the
//     request's source address — the client's mapping, never an address the
//     client names — and sends one Binding success response with the
//     request's transaction ID over it. The client listens on the same local
//     port: whether that connection arrives is the NAT's filtering.
//
// A STUN server that does not know the attribute ignores it and answers
// without it, which the client reports as "not supported".

// AttrConnectBack is natlab's CONNECT-BACK attribute.
const AttrConnectBack stun.AttrType = 0xC0A1

// Bounds of the connect-back, each with why it has that value.
const (
	// connectBackTimeout bounds the dial: the SYN and its first
	// retransmission (Linux resends after 1 s); a client waits far less.
	connectBackTimeout = 2 * time.Second
	// connectBackWriteTimeout bounds the one response on the new connection.
	connectBackWriteTimeout = 2 * time.Second
	// connectBackMax bounds connect-backs in flight on the whole server:
	// each holds a socket and a goroutine for up to connectBackTimeout.
	connectBackMax = 256
	// connectBackPerIP bounds them per client IP: a check needs two at
	// once, and a carrier-grade NAT puts many users behind one address.
	connectBackPerIP = 16
	// connectBackBurst and connectBackRate are a client IP's token bucket:
	// sixteen checks in a row, then eight a second. Each connect-back goes
	// only to an address that has just completed a handshake with the
	// server, so the bucket bounds the server's work, not a reflection.
	connectBackBurst = 32
	connectBackRate  = 16.0 // per second
	// connectBackSweepAt is how many client IPs the limiter holds before
	// it looks for idle ones, and connectBackClients how many it holds at
	// most (beyond that, new clients are refused until some go idle).
	connectBackSweepAt = 1024
	connectBackClients = 65536
	// connectBackIdle forgets a client IP whose bucket is full again.
	connectBackIdle = connectBackBurst / connectBackRate * float64(time.Second)
)

// connectBackFlags reports whether raw is a Binding request asking for a
// connect-back, and with which change flags.
func connectBackFlags(raw []byte) (uint32, bool) {
	if len(raw) < headerSize || binary.BigEndian.Uint32(raw[4:8]) != magicCookie {
		return 0, false
	}
	if binary.BigEndian.Uint16(raw[0:2]) != uint16(stun.BindingRequest.Value()) {
		return 0, false
	}
	m := &stun.Message{Raw: raw}
	if m.Decode() != nil {
		return 0, false
	}
	v, err := m.Get(AttrConnectBack)
	if err != nil || len(v) != 4 {
		return 0, false
	}
	return binary.BigEndian.Uint32(v), true
}

// tcpListeners opens a TCP listener on every socket of the plan, each with
// sockopt.Reuse so a connect-back can leave from the listener's address.
// The primary's failure means no TCP at all; an alternate's only that
// connect-backs from it are refused.
func (s *Server) listenTCP(n transport.Net, network string) {
	lc := n.CreateListenConfig(&net.ListenConfig{Control: sockopt.Reuse})
	s.tcpAlt = map[netip.AddrPort]net.Listener{}
	for i, ap := range s.addrs.Sockets() {
		ln, err := lc.Listen(context.Background(), network, ap.String())
		if err != nil {
			if i == 0 {
				s.tcpErr = fmt.Errorf("listen tcp %s: %w", ap, bareNetErr(err))
				return
			}
			s.log.Warn("no TCP connect-back from this address", "addr", ap, "reason", err)
			continue
		}
		if i == 0 {
			s.tcp = ln
			continue
		}
		s.tcpAlt[ap] = ln
	}
	// OTHER-ADDRESS over TCP tells a client where the TCP mapping tests
	// connect; only say it when all four sockets serve TCP.
	s.h.streamOther = s.addrs.Full() && len(s.tcpAlt) == len(s.addrs.Sockets())-1
	s.cb = newConnectBackLimiter()
}

// tcpListening reports whether ap (a socket of the plan) serves TCP.
func (s *Server) tcpListening(ap netip.AddrPort) bool {
	if s.tcp != nil && ap == s.addrs.Primary {
		return true
	}
	return s.tcpAlt[ap] != nil
}

// changedSource applies CHANGE-REQUEST flags to the receiving socket.
func (a Addrs) changedSource(local netip.AddrPort, flags uint32) (netip.AddrPort, bool) {
	src := local
	if flags&changeIP != 0 {
		if !a.AltIP.IsValid() {
			return src, false
		}
		ip := a.AltIP
		if local.Addr() == a.AltIP {
			ip = a.Primary.Addr()
		}
		src = netip.AddrPortFrom(ip, src.Port())
	}
	if flags&changePort != 0 {
		if a.AltPort == 0 {
			return src, false
		}
		port := a.AltPort
		if local.Port() == a.AltPort {
			port = a.Primary.Port()
		}
		src = netip.AddrPortFrom(src.Addr(), port)
	}
	return src, a.has(src)
}

// connectBack answers a CONNECT-BACK request read on c and, if it is
// granted, starts the connect-back. It reports whether c may go on.
func (s *Server) connectBack(c net.Conn, raw []byte, flags uint32, from, local netip.AddrPort) bool {
	req := &stun.Message{Raw: append([]byte(nil), raw...)}
	if err := req.Decode(); err != nil {
		return false
	}
	s.requests.Add(1)
	src, ok := s.addrs.changedSource(local, flags)
	var resp *stun.Message
	var err error
	switch {
	case flags&^(changeIP|changePort) != 0 || flags == 0:
		resp, err = s.streamError(req, stun.CodeBadRequest, "CONNECT-BACK wants change IP and/or change port")
	case !ok || !s.tcpListening(src):
		resp, err = s.streamError(req, stun.CodeBadRequest, fmt.Sprintf("cannot connect back from %s: not a TCP socket of this server", src))
	case !s.cb.acquire(from.Addr(), time.Now()):
		s.ops.Event(slog.LevelWarn, "connect-back-limit", "CONNECT-BACK refused: rate limit", "from", from)
		resp, err = s.streamError(req, stun.CodeInsufficientCapacity, "connect-back rate limit; try again later")
	default:
		resp, err = s.bindingSuccess(req, from, local, &src)
		if err != nil {
			s.cb.release(from.Addr())
			return false
		}
		s.responses.Add(1)
		if !s.writeStream(c, resp.Raw) {
			s.cb.release(from.Addr())
			return false
		}
		s.startConnectBack(req.TransactionID, src, from)
		return true
	}
	if err != nil {
		return false
	}
	s.errors.Add(1)
	return s.writeStream(c, resp.Raw)
}

func (s *Server) writeStream(c net.Conn, raw []byte) bool {
	if err := c.SetWriteDeadline(time.Now().Add(tcpWriteTimeout)); err != nil {
		return false
	}
	if _, err := c.Write(raw); err != nil {
		s.sendFailures.Add(1)
		return false
	}
	return true
}

// startConnectBack dials from src to the client's mapped address and sends
// a Binding success with the request's transaction ID.
func (s *Server) startConnectBack(id [stun.TransactionIDSize]byte, src, to netip.AddrPort) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.isClosing() {
		s.cb.release(to.Addr())
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.cb.release(to.Addr())
		d := s.net.CreateDialer(&net.Dialer{
			LocalAddr: net.TCPAddrFromAddrPort(src),
			Timeout:   connectBackTimeout,
			Control:   sockopt.Reuse,
			Cancel:    s.closing, // Close must not wait out a dropped SYN
		})
		c, err := d.Dial("tcp", to.String())
		if err != nil {
			s.log.Debug("tcp connect-back", "from", src, "to", to, "err", err)
			return
		}
		defer c.Close()
		req := &stun.Message{TransactionID: id}
		resp, err := s.bindingSuccess(req, netaddr.AddrPort(c.RemoteAddr()), src, nil)
		if err != nil {
			return
		}
		if err := c.SetWriteDeadline(time.Now().Add(connectBackWriteTimeout)); err != nil {
			return
		}
		if _, err := c.Write(resp.Raw); err != nil {
			s.sendFailures.Add(1)
			return
		}
		s.responses.Add(1)
	}()
}

// bindingSuccess builds a Binding success over TCP for req (only its
// transaction ID is used), with CONNECT-BACK when cb is set.
func (s *Server) bindingSuccess(req *stun.Message, from, local netip.AddrPort, cb *netip.AddrPort) (*stun.Message, error) {
	setters := []stun.Setter{
		stun.NewTransactionIDSetter(req.TransactionID), stun.BindingSuccess,
		&stun.XORMappedAddress{IP: from.Addr().AsSlice(), Port: int(from.Port())},
		&stun.MappedAddress{IP: from.Addr().AsSlice(), Port: int(from.Port())},
		&stun.ResponseOrigin{IP: local.Addr().AsSlice(), Port: int(local.Port())},
	}
	if other, ok := s.addrs.other(local); ok && s.h.streamOther {
		setters = append(setters, &stun.OtherAddress{IP: other.Addr().AsSlice(), Port: int(other.Port())})
	}
	if cb != nil {
		setters = append(setters, connectBackAddr(*cb))
	}
	if s.h.software != "" {
		setters = append(setters, stun.NewSoftware(s.h.software))
	}
	setters = append(setters, stun.Fingerprint)
	m, err := stun.Build(setters...)
	if err != nil {
		return nil, fmt.Errorf("build binding success: %w", err)
	}
	return m, nil
}

func (s *Server) streamError(req *stun.Message, code stun.ErrorCode, reason string) (*stun.Message, error) {
	setters := []stun.Setter{
		stun.NewTransactionIDSetter(req.TransactionID), stun.BindingError,
		&stun.ErrorCodeAttribute{Code: code, Reason: []byte(reason)},
	}
	if s.h.software != "" {
		setters = append(setters, stun.NewSoftware(s.h.software))
	}
	setters = append(setters, stun.Fingerprint)
	m, err := stun.Build(setters...)
	if err != nil {
		return nil, fmt.Errorf("build binding error: %w", err)
	}
	return m, nil
}

// connectBackAddr encodes a CONNECT-BACK address attribute.
type connectBackAddr netip.AddrPort

func (a connectBackAddr) AddTo(m *stun.Message) error {
	ap := netip.AddrPort(a)
	ma := stun.MappedAddress{IP: ap.Addr().AsSlice(), Port: int(ap.Port())}
	if err := ma.AddToAs(m, AttrConnectBack); err != nil {
		return fmt.Errorf("CONNECT-BACK: %w", err)
	}
	return nil
}

// connectBackLimiter bounds connect-backs: in flight overall and per client
// IP, and a token bucket per client IP.
type connectBackLimiter struct {
	mu       sync.Mutex
	inflight int
	ips      map[netip.Addr]*cbBucket
}

type cbBucket struct {
	tokens   float64
	last     time.Time
	inflight int
}

func newConnectBackLimiter() *connectBackLimiter {
	return &connectBackLimiter{ips: map[netip.Addr]*cbBucket{}}
}

func (l *connectBackLimiter) acquire(ip netip.Addr, now time.Time) bool {
	if l == nil {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.inflight >= connectBackMax {
		return false
	}
	b := l.ips[ip]
	if b == nil {
		if len(l.ips) >= connectBackSweepAt {
			l.sweep(now)
		}
		if len(l.ips) >= connectBackClients {
			return false
		}
		b = &cbBucket{tokens: connectBackBurst, last: now}
		l.ips[ip] = b
	}
	b.tokens = min(connectBackBurst, b.tokens+now.Sub(b.last).Seconds()*connectBackRate)
	b.last = now
	if b.inflight >= connectBackPerIP || b.tokens < 1 {
		return false
	}
	b.tokens--
	b.inflight++
	l.inflight++
	return true
}

func (l *connectBackLimiter) release(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if b := l.ips[ip]; b != nil && b.inflight > 0 {
		b.inflight--
		l.inflight--
	}
}

// sweep forgets idle client IPs whose buckets have refilled, so the map
// holds only recent clients.
func (l *connectBackLimiter) sweep(now time.Time) {
	for ip, b := range l.ips {
		if b.inflight == 0 && now.Sub(b.last) > time.Duration(connectBackIdle) {
			delete(l.ips, ip)
		}
	}
}

// closeTCP closes every TCP listener.
func (s *Server) closeTCP() error {
	var err error
	for _, ln := range append([]net.Listener{s.tcp}, slices.Collect(maps.Values(s.tcpAlt))...) {
		if ln == nil {
			continue
		}
		if e := ln.Close(); e != nil && !errors.Is(e, net.ErrClosed) {
			err = errors.Join(err, e)
		}
	}
	return err
}
