package stuntx_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/stun/v3"
	"github.com/pion/transport/v4/stdnet"

	"github.com/natlab/natlab/internal/stuntx"
	"github.com/natlab/natlab/server"
)

// testBound bounds every transaction here: loopback answers in well
// under a millisecond.
const testBound = 5 * time.Second

// natlabServer is natlab serve's STUN server on loopback, UDP and TCP.
func natlabServer(t *testing.T) netip.AddrPort {
	t.Helper()
	n, err := stdnet.NewNet()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.Listen(n, server.Config{Addrs: server.Addrs{Primary: netip.MustParseAddrPort("127.0.0.1:0")}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv.Addrs().Primary
}

func udpConn(t *testing.T) net.PacketConn {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestDatagramAgainstNatlabServer(t *testing.T) {
	srv := natlabServer(t)
	c := udpConn(t)
	ctx, cancel := context.WithTimeout(context.Background(), testBound)
	defer cancel()
	req, err := stuntx.Request()
	if err != nil {
		t.Fatal(err)
	}
	a, err := stuntx.Datagram(ctx, c, srv, req, stuntx.Backoff(100*time.Millisecond, testBound))
	if err != nil {
		t.Fatal(err)
	}
	got, ok := stuntx.Mapped(a.Msg)
	if want := c.LocalAddr().(*net.UDPAddr).AddrPort(); !ok || got != want {
		t.Errorf("mapped %v, want %v", got, want)
	}
	if a.From != srv || a.RTT <= 0 {
		t.Errorf("answer from %v after %v", a.From, a.RTT)
	}
	// The socket is the caller's again: no deadline left, its next
	// datagram reaches the next reader.
	peer := udpConn(t)
	if _, err := peer.WriteTo([]byte("after"), c.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	n, _, err := c.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "after" {
		t.Errorf("read after the transaction: %q %v", buf[:n], err)
	}
}

// responder answers requests on loopback after dropping the first drop
// of them, with an error response when errCode is set.
func responder(t *testing.T, drop int32, errCode stun.ErrorCode) (netip.AddrPort, *atomic.Int32) {
	t.Helper()
	c := udpConn(t)
	var seen atomic.Int32
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			req := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
			if req.Decode() != nil || seen.Add(1) <= drop {
				continue
			}
			ua := from.(*net.UDPAddr)
			setters := []stun.Setter{req, stun.BindingSuccess, &stun.XORMappedAddress{IP: ua.IP, Port: ua.Port}}
			if errCode != 0 {
				setters = []stun.Setter{req, stun.BindingError, errCode}
			}
			res, err := stun.Build(setters...)
			if err == nil {
				_, _ = c.WriteTo(res.Raw, from)
			}
		}
	}()
	return c.LocalAddr().(*net.UDPAddr).AddrPort(), &seen
}

func TestDatagramRetransmits(t *testing.T) {
	to, seen := responder(t, 2, 0)
	req, _ := stuntx.Request()
	sch := stuntx.Spaced(4, 50*time.Millisecond)
	a, err := stuntx.Datagram(context.Background(), udpConn(t), to, req, sch)
	if err != nil {
		t.Fatal(err)
	}
	if n := seen.Load(); n != 3 {
		t.Errorf("server saw %d requests, want 3 (two lost, the third answered)", n)
	}
	if a.RTT < 100*time.Millisecond {
		t.Errorf("answered after %v: before the third transmission", a.RTT)
	}
}

func TestDatagramTimeoutAndErrors(t *testing.T) {
	silent, seen := responder(t, 1<<30, 0)
	req, _ := stuntx.Request()
	_, err := stuntx.Datagram(context.Background(), udpConn(t), silent, req, stuntx.Spaced(2, 30*time.Millisecond))
	if !errors.Is(err, stuntx.ErrTimeout) || seen.Load() != 2 {
		t.Errorf("silent server: %v after %d requests, want ErrTimeout after 2", err, seen.Load())
	}

	refusing, _ := responder(t, 0, stun.CodeBadRequest)
	req, _ = stuntx.Request()
	_, err = stuntx.Datagram(context.Background(), udpConn(t), refusing, req, stuntx.Spaced(2, time.Second))
	var se *stuntx.ServerError
	if !errors.As(err, &se) || se.Code != 400 {
		t.Errorf("error response: %v, want a 400 ServerError", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req, _ = stuntx.Request()
	if _, err := stuntx.Datagram(ctx, udpConn(t), silent, req, stuntx.Spaced(1, time.Second)); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}

	c := udpConn(t)
	_ = c.Close()
	req, _ = stuntx.Request()
	if _, err := stuntx.Datagram(context.Background(), c, silent, req, stuntx.Spaced(1, time.Second)); err == nil {
		t.Error("closed socket: no error")
	}
}

func TestStreamAgainstNatlabServer(t *testing.T) {
	srv := natlabServer(t)
	c, err := net.DialTimeout("tcp4", srv.String(), testBound)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), testBound)
	defer cancel()
	req, _ := stuntx.Request()
	a, err := stuntx.Stream(ctx, c, req)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := stuntx.Mapped(a.Msg); !ok || got != c.LocalAddr().(*net.TCPAddr).AddrPort() {
		t.Errorf("mapped %v, want %v", got, c.LocalAddr())
	}

	// A server that never answers: ctx ends the wait.
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if s, err := ln.Accept(); err == nil {
			defer s.Close()
			_, _ = s.Read(make([]byte, 100))
			time.Sleep(time.Second)
		}
	}()
	mute, err := net.DialTimeout("tcp4", ln.Addr().String(), testBound)
	if err != nil {
		t.Fatal(err)
	}
	defer mute.Close()
	sctx, scancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer scancel()
	if _, err := stuntx.Stream(sctx, mute, req); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("silent stream: %v", err)
	}
}

func TestSchedules(t *testing.T) {
	b := stuntx.Backoff(100*time.Millisecond, 3*time.Second)
	want := []time.Duration{0, 100, 300, 700, 1500}
	if len(b.Sends) != len(want) || b.GiveUp != 3*time.Second {
		t.Fatalf("backoff %+v", b)
	}
	for i, w := range want {
		if b.Sends[i] != w*time.Millisecond {
			t.Errorf("send %d at %v, want %v ms", i, b.Sends[i], w)
		}
	}
	s := stuntx.Spaced(3, stuntx.RTTWait(20*time.Millisecond, 4, 50*time.Millisecond))
	if s.GiveUp != 240*time.Millisecond || len(s.Sends) != 3 || s.Sends[2] != 160*time.Millisecond {
		t.Errorf("spaced %+v", s)
	}
	if w := stuntx.RTTWait(100*time.Microsecond, 4, 50*time.Millisecond); w != 50*time.Millisecond {
		t.Errorf("loopback wait %v, want the floor", w)
	}
}

func TestAttributes(t *testing.T) {
	req, err := stuntx.Request(stuntx.ChangeIP|stuntx.ChangePort, stuntx.ResponsePort(0x1234))
	if err != nil {
		t.Fatal(err)
	}
	if v, err := req.Get(stun.AttrChangeRequest); err != nil || string(v) != "\x00\x00\x00\x06" {
		t.Errorf("CHANGE-REQUEST %x %v", v, err)
	}
	if v, err := req.Get(stun.AttrResponsePort); err != nil || string(v) != "\x12\x34\x00\x00" {
		t.Errorf("RESPONSE-PORT %x %v", v, err)
	}
	if err := stun.Fingerprint.Check(req); err != nil {
		t.Errorf("fingerprint: %v", err)
	}
	if req.Type != stun.BindingRequest {
		t.Errorf("type %v", req.Type)
	}
}
