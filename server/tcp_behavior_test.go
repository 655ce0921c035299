package server

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"github.com/natlab/natlab/internal/sockopt"
)

func readStream(t *testing.T, c net.Conn) *stun.Message {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
	hdr := make([]byte, headerSize)
	if _, err := io.ReadFull(c, hdr); err != nil {
		t.Fatalf("read header: %v", err)
	}
	body := make([]byte, binary.BigEndian.Uint16(hdr[2:4]))
	if _, err := io.ReadFull(c, body); err != nil {
		t.Fatalf("read body: %v", err)
	}
	return decode(t, append(hdr, body...))
}

type connectBackFlag uint32

func (f connectBackFlag) AddTo(m *stun.Message) error {
	m.Add(AttrConnectBack, binary.BigEndian.AppendUint32(nil, uint32(f)))
	return nil
}

func reuseListener(t *testing.T) net.Listener {
	t.Helper()
	ln, err := (&net.ListenConfig{Control: sockopt.Reuse}).Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

// dialFrom connects from local (port shared with a listener) to to.
func dialFrom(t *testing.T, local, to netip.AddrPort) net.Conn {
	t.Helper()
	d := &net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(local), Control: sockopt.Reuse, Timeout: ioTimeout}
	c, err := d.Dial("tcp4", to.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestTCPBehaviourServer: every socket of the plan serves Binding over TCP
// with OTHER-ADDRESS (the mapping test), and CONNECT-BACK makes the server
// connect from the changed socket to the request's source (the filtering
// test), where a listener on the same port takes it.
func TestTCPBehaviourServer(t *testing.T) {
	alt := freeUDPPort(t)
	srv := startLoopback(t, Addrs{Primary: netip.MustParseAddrPort("127.0.0.1:0"), AltIP: netip.MustParseAddr("127.0.0.2"), AltPort: alt})
	a := srv.Addrs()
	ln := reuseListener(t)
	local := ln.Addr().(*net.TCPAddr).AddrPort()

	// Mapping: one local port to all four sockets.
	for _, to := range a.Sockets() {
		c := dialFrom(t, local, to)
		if _, err := c.Write(bindingRequest(t, stun.Fingerprint)); err != nil {
			t.Fatal(err)
		}
		m := readStream(t, c)
		var xa stun.XORMappedAddress
		if err := xa.GetFrom(m); err != nil || !xa.IP.Equal(local.Addr().AsSlice()) || xa.Port != int(local.Port()) {
			t.Errorf("to %s: mapped %s (%v), want %s", to, xa, err, local)
		}
		other, _ := a.other(to)
		if got := addrOf(t, m, stun.AttrOtherAddress); got != other {
			t.Errorf("to %s: OTHER-ADDRESS %s, want %s", to, got, other)
		}
	}

	// Filtering: connect back from the other address and port, then from
	// the other port only.
	for _, tc := range []struct {
		flags uint32
		from  netip.AddrPort
	}{
		{0x06, netip.AddrPortFrom(a.AltIP, a.AltPort)},
		{0x02, netip.AddrPortFrom(a.Primary.Addr(), a.AltPort)},
		{0x04, netip.AddrPortFrom(a.AltIP, a.Primary.Port())},
	} {
		// A fresh port per test: the 4-tuple to the primary is taken.
		ln := reuseListener(t)
		c := dialFrom(t, ln.Addr().(*net.TCPAddr).AddrPort(), a.Primary)
		req, err := stun.Build(stun.TransactionID, stun.BindingRequest, connectBackFlag(tc.flags), stun.Fingerprint)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(req.Raw); err != nil {
			t.Fatal(err)
		}
		m := readStream(t, c)
		if m.Type != stun.BindingSuccess {
			t.Fatalf("flags %#x: %v", tc.flags, m)
		}
		if got := addrOf(t, m, AttrConnectBack); got != tc.from {
			t.Errorf("flags %#x: CONNECT-BACK %s, want %s", tc.flags, got, tc.from)
		}
		_ = ln.(*net.TCPListener).SetDeadline(time.Now().Add(ioTimeout))
		back, err := ln.Accept()
		if err != nil {
			t.Fatalf("flags %#x: no connect-back: %v", tc.flags, err)
		}
		if got := back.RemoteAddr().(*net.TCPAddr).AddrPort(); got != tc.from {
			t.Errorf("flags %#x: connected from %s, want %s", tc.flags, got, tc.from)
		}
		bm := readStream(t, back)
		_ = back.Close()
		if bm.TransactionID != req.TransactionID || bm.Type != stun.BindingSuccess {
			t.Errorf("flags %#x: connect-back carried %v", tc.flags, bm)
		}
	}
}

// TestConnectBackRefusals: a malformed request and a plan that cannot make
// the change get an error response, not a connection.
func TestConnectBackRefusals(t *testing.T) {
	srv := startLoopback(t, Addrs{Primary: netip.MustParseAddrPort("127.0.0.1:0")})
	for _, tc := range []struct {
		flags uint32
		code  stun.ErrorCode
	}{
		{0, stun.CodeBadRequest},
		{0x01, stun.CodeBadRequest},
		{0x06, stun.CodeBadRequest}, // no alternate address
	} {
		c := dialFrom(t, netip.MustParseAddrPort("127.0.0.1:0"), srv.Addrs().Primary)
		req, err := stun.Build(stun.TransactionID, stun.BindingRequest, connectBackFlag(tc.flags), stun.Fingerprint)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(req.Raw); err != nil {
			t.Fatal(err)
		}
		m := readStream(t, c)
		var ec stun.ErrorCodeAttribute
		if err := ec.GetFrom(m); err != nil || ec.Code != tc.code {
			t.Errorf("flags %#x: %v (%v), want error %d", tc.flags, m, err, tc.code)
		}
	}
}

// TestConnectBackLimiter: per-IP burst and rate, per-IP and global
// concurrency.
func TestConnectBackLimiter(t *testing.T) {
	l := newConnectBackLimiter()
	ip := netip.MustParseAddr("198.51.100.7")
	now := time.Unix(1000, 0)
	got := 0
	for range 2 * connectBackPerIP {
		if l.acquire(ip, now) {
			got++
		}
	}
	if got != connectBackPerIP {
		t.Fatalf("%d in flight from one IP, want %d", got, connectBackPerIP)
	}
	for range got {
		l.release(ip)
	}
	// The burst is spent after connectBackBurst grants in a row.
	for range connectBackBurst - connectBackPerIP {
		if !l.acquire(ip, now) {
			t.Fatal("refused within the burst")
		}
		l.release(ip)
	}
	if l.acquire(ip, now) {
		t.Fatal("granted past the burst")
	}
	if !l.acquire(ip, now.Add(time.Second)) {
		t.Fatal("refused after a second of refill")
	}
	l.release(ip)
	// Global bound: many IPs.
	l = newConnectBackLimiter()
	granted := 0
	for i := range connectBackMax + 10 {
		if l.acquire(netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), now) {
			granted++
		}
	}
	if granted != connectBackMax {
		t.Fatalf("%d in flight overall, want %d", granted, connectBackMax)
	}
}
