package natclass

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"time"

	"github.com/pion/transport/v4"

	"github.com/natlab/natlab/internal/stuntx"
)

// ErrServerUnreachable means no given server answered over UDP nor over
// TCP: the server is down or the path to it is broken, so nothing can be
// said about this host's NAT (a blocked UDP is only concluded when the
// server answers over TCP).
var ErrServerUnreachable = errors.New("STUN server unreachable")

// errRefused is an ICMP port-unreachable for test I, reported by the
// kernel on a connected socket.
var errRefused = errors.New("port unreachable (ICMP)")

// tcpReachTimeout bounds the TCP fallback that tells a dead server from
// blocked UDP: a live server answers within a round trip or two.
const tcpReachTimeout = 2 * time.Second

// firstTransaction is test I towards one server, with a watcher that ends
// it at once when the kernel reports ICMP port-unreachable: a server that
// is down on a live host answers that way, and waiting 3 s for it would
// only add silence to a certain result.
func (d *discovery) firstTransaction(ctx context.Context, s *sock, to netip.AddrPort) (stuntx.Answer, time.Duration, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	refused := make(chan struct{})
	go func() {
		if watchRefused(ctx, d.opts.Net, to) {
			close(refused)
			cancel()
		}
	}()
	pk, rtt, err := s.transact(ctx, s, to, firstSchedule())
	if err != nil {
		select {
		case <-refused:
			return stuntx.Answer{}, 0, errRefused
		default:
		}
	}
	return pk, rtt, err
}

// watchRefused sends Binding requests to a from a connected UDP socket
// (the only kind the kernel tells about ICMP errors portably) on test I's
// schedule and reports whether the answer was port-unreachable. It ends
// on the first answer of either kind, or with ctx.
func watchRefused(ctx context.Context, n transport.Net, a netip.AddrPort) bool {
	c, err := n.Dial(FamilyOf(a.Addr()).udp(), a.String())
	if err != nil {
		return false
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.SetReadDeadline(time.Now()) })
	defer stop()
	go func() {
		for _, at := range firstSchedule().sends {
			select {
			case <-ctx.Done():
				return
			case <-time.After(at):
			}
			m, err := stuntx.Request()
			if err != nil {
				return
			}
			if _, err := c.Write(m.Raw); err != nil {
				return // the refusal also surfaces on a write; the read sees it
			}
		}
	}()
	buf := make([]byte, 1500)
	for ctx.Err() == nil {
		_, err := c.Read(buf)
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			return true
		case err == nil:
			return false // the server answers: test I will see it too
		case errors.Is(err, net.ErrClosed), ctx.Err() != nil:
			return false
		}
	}
	return false
}

// diagnoseSilence runs when no server answered test I: it asks each over
// TCP (RFC 5389 framing on the same port). One answer means the server is
// up and UDP is what is blocked; none means the servers are unreachable
// and nil is replaced by an error wrapping ErrServerUnreachable. A stack
// without TCP (the in-process lab) cannot tell, and keeps UDPBlocked.
func (d *discovery) diagnoseSilence(ctx context.Context, addrs []netip.AddrPort, p *Profile) error {
	if !hasTCP(d.opts.Net) {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make([]error, len(addrs))
	done := make(chan int, len(addrs))
	for i, a := range addrs {
		go func() {
			errs[i] = stunOverTCP(ctx, d.opts.Net, a)
			done <- i
		}()
	}
	answered := false
	for range addrs {
		if i := <-done; errs[i] == nil && !answered {
			answered = true
			cancel() // one answer settles it; the rest end at once
		}
	}
	if answered {
		return nil
	}
	var why []string
	for i, err := range errs {
		why = append(why, fmt.Sprintf("%s: UDP %s, TCP %v", d.opts.Servers[i], p.Servers[i].Error, err))
	}
	return fmt.Errorf("%w: %s", ErrServerUnreachable, strings.Join(why, "; "))
}

// hasTCP reports whether n can open TCP sockets.
func hasTCP(n transport.Net) bool {
	l, err := n.ListenTCP("tcp4", &net.TCPAddr{})
	if err != nil {
		return false
	}
	_ = l.Close()
	return true
}

// stunOverTCP sends one Binding request over TCP and waits for any STUN
// response: a connection that is accepted and then closed (a middlebox,
// a port forwarder with nothing behind it) is not an answer.
func stunOverTCP(ctx context.Context, n transport.Net, a netip.AddrPort) error {
	deadline := time.Now().Add(tcpReachTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	c, err := n.CreateDialer(&net.Dialer{Deadline: deadline}).Dial(FamilyOf(a.Addr()).tcp(), a.String())
	if err != nil {
		return tcpErr(err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	if err := c.SetDeadline(deadline); err != nil {
		return err
	}
	req, err := stuntx.Request()
	if err != nil {
		return err
	}
	_, err = stuntx.Stream(ctx, c, req)
	var se *stuntx.ServerError
	switch {
	case err == nil, errors.As(err, &se):
		return nil // any STUN answer, even an error, is the server
	case isNetErr(err):
		return tcpErr(err)
	}
	return errors.New("the answer is not STUN")
}

// isNetErr tells the stream's failures (refused, closed, silent) from an
// answer that is not STUN.
func isNetErr(err error) bool {
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, net.ErrClosed) || errors.As(err, &ne) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// tcpErr shortens the usual failures to the words an operator knows.
func tcpErr(err error) error {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return errors.New("connection refused")
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
		return errors.New("accepted, then closed without answering")
	case errors.As(err, &ne) && ne.Timeout():
		return errors.New("no answer")
	}
	return err
}
