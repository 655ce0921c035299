package server

import (
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/pion/stun/v3"
	"github.com/pion/transport/v4/stdnet"
)

// ioTimeout bounds every socket wait in these tests: loopback answers in
// microseconds, so a second means the server is broken.
const ioTimeout = time.Second

func startLoopback(t *testing.T, a Addrs) *Server {
	t.Helper()
	n, err := stdnet.NewNet()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := Listen(n, Config{Addrs: a})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv
}

func freeUDPPort(t *testing.T) uint16 {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return uint16(c.LocalAddr().(*net.UDPAddr).Port)
}

func TestServerUDPAndTCP(t *testing.T) {
	before := runtime.NumGoroutine()
	alt := freeUDPPort(t)
	srv := startLoopback(t, Addrs{Primary: netip.MustParseAddrPort("127.0.0.1:0"), AltIP: netip.MustParseAddr("127.0.0.2"), AltPort: alt})
	a := srv.Addrs()
	if a.Primary.Port() == 0 || len(a.Sockets()) != 4 {
		t.Fatalf("plan %v", a)
	}
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, tc := range []struct {
		change uint32
		from   netip.AddrPort
	}{
		{0, a.Primary},
		{0x02, netip.AddrPortFrom(a.Primary.Addr(), a.AltPort)},
		{0x04, netip.AddrPortFrom(a.AltIP, a.Primary.Port())},
		{0x06, netip.AddrPortFrom(a.AltIP, a.AltPort)},
	} {
		req := bindingRequest(t, changeRequest(tc.change), stun.Fingerprint)
		if _, err := c.WriteTo(req, net.UDPAddrFromAddrPort(a.Primary)); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
		buf := make([]byte, 1500)
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			t.Fatalf("change %#x: %v", tc.change, err)
		}
		if got := from.(*net.UDPAddr).AddrPort(); got != tc.from {
			t.Errorf("change %#x: answer from %s, want %s", tc.change, got, tc.from)
		}
		if m := decode(t, buf[:n]); m.Type != stun.BindingSuccess {
			t.Errorf("change %#x: %v", tc.change, m.Type)
		}
	}
	if _, err := c.WriteTo([]byte("garbage that is not STUN"), net.UDPAddrFromAddrPort(a.Primary)); err != nil {
		t.Fatal(err)
	}

	if err := srv.TCPError(); err != nil {
		t.Fatalf("tcp not served: %v", err)
	}
	tc, err := net.DialTimeout("tcp4", a.Primary.String(), ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	_ = tc.SetDeadline(time.Now().Add(ioTimeout))
	for range 2 { // two requests on one connection
		if _, err := tc.Write(bindingRequest(t)); err != nil {
			t.Fatal(err)
		}
		hdr := make([]byte, headerSize)
		if _, err := io.ReadFull(tc, hdr); err != nil {
			t.Fatal(err)
		}
		body := make([]byte, binary.BigEndian.Uint16(hdr[2:4]))
		if _, err := io.ReadFull(tc, body); err != nil {
			t.Fatal(err)
		}
		m := decode(t, append(hdr, body...))
		if got := addrOf(t, m, stun.AttrMappedAddress); got != tc.LocalAddr().(*net.TCPAddr).AddrPort() {
			t.Errorf("tcp mapped %s, want %s", got, tc.LocalAddr())
		}
	}

	deadline := time.Now().Add(ioTimeout)
	for srv.Stats().Dropped == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if st := srv.Stats(); st.Requests != 6 || st.Responses != 6 || st.Dropped != 1 || st.Errors != 0 {
		t.Errorf("stats %+v, want 6 requests and responses, 1 dropped", st)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	_ = tc.Close()
	// Every server goroutine must be gone after Close.
	for end := time.Now().Add(ioTimeout); runtime.NumGoroutine() > before && time.Now().Before(end); {
		time.Sleep(5 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("%d goroutines after Close, %d before", n, before)
	}
}

func TestListenErrors(t *testing.T) {
	n, err := stdnet.NewNet()
	if err != nil {
		t.Fatal(err)
	}
	for name, a := range map[string]Addrs{
		"no address":          {},
		"wildcard with alt":   {Primary: netip.MustParseAddrPort("0.0.0.0:0"), AltIP: netip.MustParseAddr("127.0.0.2")},
		"alt equals primary":  {Primary: netip.MustParseAddrPort("127.0.0.1:0"), AltIP: netip.MustParseAddr("127.0.0.1")},
		"alt port equal":      {Primary: netip.MustParseAddrPort("127.0.0.1:5000"), AltPort: 5000},
		"not a local address": {Primary: netip.MustParseAddrPort("192.0.2.1:0")},
	} {
		if srv, err := Listen(n, Config{Addrs: a}); err == nil {
			_ = srv.Close()
			t.Errorf("%s: no error", name)
		}
	}
}
