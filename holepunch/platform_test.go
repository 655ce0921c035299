package holepunch

// The socket options behind build tags (internal/sockopt)
// and the portable TTL option, on this host's real stack: these tests run
// on every OS the release builds for.

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/pion/transport/v4/stdnet"
	"golang.org/x/net/ipv4"
)

func TestReuseControlSharesPort(t *testing.T) {
	n, err := stdnet.NewNet()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	shared, err := ListenTCP(ctx, n, 0)
	if err != nil {
		t.Fatalf("ListenTCP: %v", err)
	}
	defer shared.Close()
	target, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	port := shared.Addr().(*net.TCPAddr).Port
	// A connect from the listener's own port, as PunchTCP's attempts do.
	d := net.Dialer{
		LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port},
		Control:   ReuseControl,
		Timeout:   2 * time.Second,
	}
	c, err := d.DialContext(ctx, "tcp4", target.Addr().String())
	if err != nil {
		t.Fatalf("connect from the listening port %d: %v", port, err)
	}
	defer c.Close()
	_ = target.(*net.TCPListener).SetDeadline(time.Now().Add(2 * time.Second))
	in, err := target.Accept()
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	defer in.Close()
	if got := in.RemoteAddr().(*net.TCPAddr).Port; got != port {
		t.Errorf("connection came from port %d, want the shared port %d", got, port)
	}
}

func TestLowerTTLOnRealSocket(t *testing.T) {
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pc := ipv4.NewPacketConn(c)
	before, err := pc.TTL()
	if err != nil {
		t.Fatalf("read TTL: %v", err)
	}
	const opening = 3
	e := newEngine(Session{}, []net.PacketConn{c}, opening, nil)
	restore := e.lowerTTL()
	if got, err := pc.TTL(); err != nil || got != opening {
		t.Errorf("TTL while opening = %d, %v; want %d", got, err, opening)
	}
	restore()
	if got, err := pc.TTL(); err != nil || got != before {
		t.Errorf("TTL after restore = %d, %v; want %d", got, err, before)
	}
}
