package server

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v3"
	"github.com/pion/transport/v4/stdnet"

	"github.com/natlab/natlab/internal/leakcheck"
)

func startLimited(t *testing.T, l Limits) *Server {
	t.Helper()
	n, err := stdnet.NewNet()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := Listen(n, Config{Addrs: Addrs{Primary: netip.MustParseAddrPort("127.0.0.1:0")}, Limits: l})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv
}

// One source gets its burst of Binding answers, then silence; the drops
// are counted, and another source is still answered.
func TestBindingRateLimit(t *testing.T) {
	leakcheck.Check(t)
	srv := startLimited(t, Limits{BindingRate: 0.001, BindingBurst: 5})
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	to := net.UDPAddrFromAddrPort(srv.Addrs().Primary)
	for range 20 {
		_, _ = c.WriteTo(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw, to)
	}
	got := 0
	buf := make([]byte, 1500)
	for {
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if _, _, err := c.ReadFrom(buf); err != nil {
			break
		}
		got++
	}
	if got != 5 || srv.LimitStats().Binding != 15 {
		t.Errorf("%d answered, %d dropped; want 5 and 15", got, srv.LimitStats().Binding)
	}
	other, err := net.ListenPacket("udp4", "127.0.0.2:0")
	if err != nil {
		t.Skipf("no 127.0.0.2: %v", err)
	}
	defer other.Close()
	_, _ = other.WriteTo(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw, to)
	_ = other.SetReadDeadline(time.Now().Add(ioTimeout))
	if _, _, err := other.ReadFrom(buf); err != nil {
		t.Errorf("another source: %v", err)
	}
}

// A source may hold ConnsPerSource TCP connections; more are closed at
// once, and closing one makes room.
func TestConnsPerSource(t *testing.T) {
	leakcheck.Check(t)
	srv := startLimited(t, Limits{ConnsPerSource: 2})
	dial := func() net.Conn {
		c, err := net.DialTimeout("tcp4", srv.Addrs().Primary.String(), ioTimeout)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	binding := func(c net.Conn) error {
		_ = c.SetDeadline(time.Now().Add(ioTimeout))
		if _, err := c.Write(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw); err != nil {
			return err
		}
		_, err := io.ReadFull(c, make([]byte, headerSize))
		return err
	}
	a, b := dial(), dial()
	if err := errors.Join(binding(a), binding(b)); err != nil {
		t.Fatal(err)
	}
	if err := binding(dial()); err == nil {
		t.Error("a third connection from one source was served")
	}
	if srv.LimitStats().ConnsRefused != 1 {
		t.Errorf("stats %+v", srv.LimitStats())
	}
	_ = a.Close()
	deadline := time.Now().Add(ioTimeout)
	for binding(dial()) != nil {
		if time.Now().After(deadline) {
			t.Fatal("closing a connection made no room")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
