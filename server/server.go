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
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/transport/v4"

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

// readBufferSize fits any UDP datagram a path MTU allows; larger STUN
// requests are not legitimate Binding requests.
const readBufferSize = 1500

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
}

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
	conns   map[netip.AddrPort]net.PacketConn
	tcp     transport.TCPListener
	tcpErr  error
	closing chan struct{}
	once    sync.Once
	wg      sync.WaitGroup

	mu       sync.Mutex
	tcpConns map[net.Conn]struct{}

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
	s := &Server{log: log, rz: cfg.Rendezvous, conns: map[netip.AddrPort]net.PacketConn{}, closing: make(chan struct{}), tcpConns: map[net.Conn]struct{}{}}

	network := "udp4"
	if a.Primary.Addr().Is6() && !a.Primary.Addr().Is4In6() {
		network = "udp6"
	}
	first, err := n.ListenPacket(network, a.Primary.String())
	if err != nil {
		return nil, fmt.Errorf("stun server: listen udp %s: %w", a.Primary, err)
	}
	if a.Primary.Port() == 0 {
		a.Primary = netip.AddrPortFrom(a.Primary.Addr(), toAddrPort(first.LocalAddr()).Port())
	}
	s.addrs = a
	s.h = NewHandler(a, sw)
	s.conns[a.Primary] = first
	for _, ap := range a.Sockets()[1:] {
		c, err := n.ListenPacket(network, ap.String())
		if err != nil {
			s.closeConns()
			return nil, fmt.Errorf("stun server: listen udp %s: %w", ap, err)
		}
		s.conns[ap] = c
	}
	tcpNet := "tcp4"
	if network == "udp6" {
		tcpNet = "tcp6"
	}
	s.tcp, s.tcpErr = n.ListenTCP(tcpNet, net.TCPAddrFromAddrPort(a.Primary))
	if s.tcpErr != nil {
		s.tcp = nil
		s.tcpErr = fmt.Errorf("tcp %s: %w", a.Primary, s.tcpErr)
		log.Warn("serving STUN over UDP only", "reason", s.tcpErr)
	}
	for ap, c := range s.conns {
		s.wg.Add(1)
		go s.serveUDP(ap, c)
	}
	if s.tcp != nil {
		s.wg.Add(1)
		go s.acceptTCP()
	}
	log.Info("STUN server listening", "plan", a.String(), "tcp", s.tcp != nil)
	for _, u := range a.Unsupported() {
		log.Warn("RFC 5780 test not supported", "test", u)
	}
	return s, nil
}

// Addrs is the address plan being served (with chosen ports filled in).
func (s *Server) Addrs() Addrs { return s.addrs }

// Handler is the server's binding handler.
func (s *Server) Handler() *Handler { return s.h }

// TCPError is nil when Binding over TCP is served, else why not.
func (s *Server) TCPError() error { return s.tcpErr }

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
		err = s.closeConns()
		if s.tcp != nil {
			if e := s.tcp.Close(); e != nil && !errors.Is(e, net.ErrClosed) {
				err = errors.Join(err, e)
			}
		}
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
	buf := make([]byte, readBufferSize)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			if s.isClosing() || errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Debug("udp read", "socket", local, "err", err)
			continue
		}
		if s.rz != nil && rendezvous.IsRendezvous(buf[:n]) {
			rendezvous.Send(c, s.rz.Handle(buf[:n], toAddrPort(from)))
			continue
		}
		rep := s.h.Handle(buf[:n], toAddrPort(from), local)
		s.count(rep)
		if rep.Raw == nil {
			continue
		}
		out := s.conns[rep.From]
		if out == nil { // the handler only names sockets of the plan
			out = c
		}
		if _, err := out.WriteTo(rep.Raw, net.UDPAddrFromAddrPort(rep.To)); err != nil {
			s.sendFailures.Add(1)
			s.log.Debug("udp write", "from", rep.From, "to", rep.To, "err", err)
		}
	}
}

func (s *Server) acceptTCP() {
	defer s.wg.Done()
	for {
		c, err := s.tcp.Accept()
		if err != nil {
			if s.isClosing() || errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Debug("tcp accept", "err", err)
			// Accept errors (EMFILE, say) repeat at once; pause rather than spin.
			select {
			case <-s.closing:
				return
			case <-time.After(50 * time.Millisecond):
			}
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
		go s.serveTCP(c)
	}
}

// serveTCP answers RFC 5389-framed messages on one connection until the
// client closes it, goes idle, or sends something that is not STUN.
func (s *Server) serveTCP(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.tcpConns, c)
		s.mu.Unlock()
		_ = c.Close()
	}()
	from, local := toAddrPort(c.RemoteAddr()), s.addrs.Primary
	buf := make([]byte, maxMessageSize)
	for {
		if err := c.SetReadDeadline(time.Now().Add(tcpIdleTimeout)); err != nil {
			return
		}
		if _, err := io.ReadFull(c, buf[:headerSize]); err != nil {
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

// toAddrPort converts a UDP or TCP address, unmapping IPv4-in-IPv6.
func toAddrPort(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	switch v := a.(type) {
	case *net.UDPAddr:
		ap = v.AddrPort()
	case *net.TCPAddr:
		ap = v.AddrPort()
	default:
		ap, _ = netip.ParseAddrPort(a.String())
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
