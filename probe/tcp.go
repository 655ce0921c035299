package probe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/natlab/natlab/holepunch"
	"github.com/natlab/natlab/internal/stuntx"
	"github.com/natlab/natlab/natclass"
)

// tcpReflexiveTimeout bounds the STUN-over-TCP binding that learns the
// TCP mapping: a connect plus one round trip to the server.
const tcpReflexiveTimeout = 3 * time.Second

// prepareTCP listens on a port shared with the connect attempts and
// learns, with a STUN binding over TCP from that same port, the address
// the peer must connect to.
func (a *agent) prepareTCP(ctx context.Context, f *family) (*socket, error) {
	ln, err := holepunch.ListenTCPFor(ctx, a.o.Net, f.srv.Addr(), 0)
	if err != nil {
		return nil, err
	}
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	srflx, err := a.tcpReflexive(ctx, f, port)
	if err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("learn the TCP mapping: %w", err)
	}
	return &socket{ln: ln, srflx: srflx, candidates: []holepunch.Candidate{{Kind: holepunch.Srflx, Addr: srflx}}}, nil
}

// tcpReflexive sends one STUN Binding request over a TCP connection from
// local port port to the server (in family f) and returns the mapped
// address.
func (a *agent) tcpReflexive(ctx context.Context, f *family, port uint16) (netip.AddrPort, error) {
	ctx, cancel := context.WithTimeout(ctx, tcpReflexiveTimeout)
	defer cancel()
	d := a.o.Net.CreateDialer(&net.Dialer{
		LocalAddr: &net.TCPAddr{Port: int(port)},
		Control:   holepunch.ReuseControl,
		Deadline:  time.Now().Add(tcpReflexiveTimeout),
	})
	c, err := d.Dial(f.tcp, f.srv.String())
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("connect to %s: %w", f.srv, err)
	}
	defer c.Close()
	req, err := stuntx.Request()
	if err != nil {
		return netip.AddrPort{}, err
	}
	res, err := stuntx.Stream(ctx, c, req)
	if err != nil {
		return netip.AddrPort{}, err
	}
	m, ok := stuntx.Mapped(res.Msg)
	if !ok {
		return netip.AddrPort{}, errors.New("binding response without a mapped address")
	}
	return m, nil
}

// punchTCP runs the simultaneous open; the connection is held like a UDP
// path until the peer is past the next barrier.
func (a *agent) punchTCP(ctx context.Context, p natclass.Prediction, s *socket, theirs stepData) (*holepunch.Path, holepunch.Result) {
	timeout := holepunch.DefaultTCPTimeout
	if p.Outcome == natclass.Fail {
		timeout = punchTimeout // confirming a predicted failure
	}
	ln := s.ln
	s.ln = nil // PunchTCP owns it now
	conn, res, _ := holepunch.PunchTCP(ctx, holepunch.TCPConfig{
		Net: a.o.Net, Session: a.sess, Listener: ln, Remote: theirs.Candidates, Timeout: timeout, Logger: a.log,
	})
	if conn != nil {
		a.heldConn = conn
	}
	return nil, res
}
