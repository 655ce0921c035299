package server

import (
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v3"
	"github.com/pion/transport/v4/stdnet"

	"github.com/natlab/natlab/internal/leakcheck"
)

// A TURN connection that sent one unauthenticated request and fell
// silent is closed after turnPreAuthIdle, not kept for the allocation
// lifetime (61 min, issue 11: 5,000 such connections held 113 MiB).
func TestTURNPreAuthIdleCloses(t *testing.T) {
	leakcheck.Check(t)
	old := turnPreAuthIdle
	turnPreAuthIdle = 200 * time.Millisecond
	t.Cleanup(func() { turnPreAuthIdle = old })
	n, err := stdnet.NewNet()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := Listen(n, Config{Addrs: Addrs{Primary: netip.MustParseAddrPort("127.0.0.1:0")},
		TURN: &TURNConfig{Users: map[string]string{"u": "p"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	c, err := net.DialTimeout("tcp4", srv.Addrs().Primary.String(), ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	alloc := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest),
		stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}})
	if _, err := c.Write(alloc.Raw); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, c); err != nil {
		t.Fatalf("the server did not close the idle unauthenticated stream: %v", err)
	}
	if d := time.Since(start); d < turnPreAuthIdle {
		t.Errorf("closed after %v, before the idle timeout", d)
	}
}
