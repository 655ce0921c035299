package stuntx

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v3"
)

// Datagram runs one transaction from conn to `to` on schedule sch,
// reading conn until the answer arrives and dropping anything else.
// Nobody else may read conn meanwhile; it is left with no read deadline,
// ready for its next user (a hole punch, say).
func Datagram(ctx context.Context, conn net.PacketConn, to netip.AddrPort, req *stun.Message, sch Schedule) (Answer, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	answers := make(chan Answer, 1)
	var stopping atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				var ne net.Error
				switch {
				case stopping.Load():
					return
				case !errors.As(err, &ne) || !ne.Timeout():
					cancel(fmt.Errorf("read binding response: %w", err))
					return
				}
				continue
			}
			if m := decode(buf[:n], req); m != nil {
				var ap netip.AddrPort
				if ua, ok := from.(*net.UDPAddr); ok {
					ap = netip.AddrPortFrom(ua.AddrPort().Addr().Unmap(), ua.AddrPort().Port())
				}
				select {
				case answers <- Answer{Msg: m, From: ap}:
				default: // a retransmission's duplicate answer
				}
			}
		}
	}()
	defer func() {
		// Wake the reader and wait for it, so conn is the caller's again.
		stopping.Store(true)
		_ = conn.SetReadDeadline(time.Unix(1, 0))
		<-done
		_ = conn.SetReadDeadline(time.Time{})
	}()
	dst := net.UDPAddrFromAddrPort(to)
	a, err := Transact(ctx, req, sch, func(b []byte) error {
		if _, err := conn.WriteTo(b, dst); err != nil {
			return fmt.Errorf("send to %s: %w", to, err)
		}
		return nil
	}, answers)
	if err != nil && ctx.Err() != nil {
		err = context.Cause(ctx) // the caller's, or the reader's
	}
	return a, err
}

// decode is b as a response to req, or nil.
func decode(b []byte, req *stun.Message) *stun.Message {
	if !stun.IsMessage(b) {
		return nil
	}
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if m.Decode() != nil || m.TransactionID != req.TransactionID {
		return nil
	}
	return m
}

// maxStreamMessage bounds what a server may announce over a stream: a
// Binding response is a few hundred bytes.
const maxStreamMessage = 2048

// Stream runs one transaction over the stream c (RFC 5389 framing: the
// header holds the length): one transmission, since the stream is
// reliable, then messages are read until the one answering req. ctx
// bounds it; an error response is returned with a *ServerError.
func Stream(ctx context.Context, c net.Conn, req *stun.Message) (Answer, error) {
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	start := time.Now()
	if _, err := c.Write(req.Raw); err != nil {
		return Answer{}, fmt.Errorf("send binding request: %w", err)
	}
	var from netip.AddrPort
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		from = ta.AddrPort()
	}
	for {
		m, err := ReadStream(c)
		if err != nil {
			if ctx.Err() != nil {
				return Answer{}, fmt.Errorf("binding over a stream: %w", ctx.Err())
			}
			return Answer{}, err
		}
		if m.TransactionID != req.TransactionID {
			continue // not ours
		}
		a := Answer{Msg: m, From: from, RTT: time.Since(start)}
		return a, asError(m)
	}
}

// ReadStream reads one STUN message from a stream.
func ReadStream(r io.Reader) (*stun.Message, error) {
	hdr := make([]byte, 20)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return nil, fmt.Errorf("read STUN header: %w", err)
	}
	n := int(binary.BigEndian.Uint16(hdr[2:4]))
	if n > maxStreamMessage {
		return nil, fmt.Errorf("STUN message of %d bytes: not STUN", n)
	}
	raw := append(hdr, make([]byte, n)...)
	if _, err := io.ReadFull(r, raw[20:]); err != nil {
		return nil, fmt.Errorf("read STUN body: %w", err)
	}
	m := &stun.Message{Raw: raw}
	if err := m.Decode(); err != nil {
		return nil, fmt.Errorf("decode STUN message: %w", err)
	}
	return m, nil
}
