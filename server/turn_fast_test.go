package server_test

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/natlab/natlab/internal/interop"
	"github.com/natlab/natlab/internal/leakcheck"
	"github.com/natlab/natlab/relay"
	"github.com/natlab/natlab/server"
)

// exchangeBoth sends n datagrams each way between two allocations and checks
// every one arrives intact from the other's relayed address.
func exchangeBoth(t *testing.T, a, b *relay.Allocation, n int, tag string) {
	t.Helper()
	buf := make([]byte, 1500)
	for i := range n {
		for _, dir := range [][2]*relay.Allocation{{a, b}, {b, a}} {
			from, to := dir[0], dir[1]
			msg := fmt.Sprintf("%s %d from %v", tag, i, from.Relayed)
			if _, err := from.Conn.WriteTo([]byte(msg), net.UDPAddrFromAddrPort(to.Relayed)); err != nil {
				t.Fatal(err)
			}
			_ = to.Conn.SetReadDeadline(time.Now().Add(turnTestTimeout))
			k, src, err := to.Conn.ReadFrom(buf)
			if err != nil || string(buf[:k]) != msg || src.String() != from.Relayed.String() {
				t.Fatalf("%s %d: got %q from %v (%v), want %q", tag, i, buf[:k], src, err, msg)
			}
		}
		time.Sleep(5 * time.Millisecond) // channel binding happens after the first write
	}
}

// Channels pion/turn bound are relayed by natlab's fast path in both
// directions, over UDP and TCP, IPv4 and IPv6; an expired route falls
// back to pion, and an allocation's routes go with it.
func TestTURNChannelFastPath(t *testing.T) {
	leakcheck.Check(t)
	for _, c := range []struct {
		name  string
		start func(*testing.T) *server.Server
		tr    relay.Transport
	}{
		{"udp", func(t *testing.T) *server.Server { return startTURN(t, nil) }, relay.UDP},
		{"tcp", func(t *testing.T) *server.Server { return startTURN(t, nil) }, relay.TCP},
		{"udp6", startTURN6, relay.UDP},
		{"tcp6", startTURN6, relay.TCP},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.name[len(c.name)-1] == '6' {
				interop.NeedLoopback6(t)
			}
			srv, tr := c.start(t), c.tr
			a, b := permittedPair(t, srv, tr, relay.UDP)
			exchangeBoth(t, a, b, 20, "bound")
			burst(t, a, b, 32) // many frames per stream read: batched sends
			burst(t, b, a, 32)
			routes, fast := server.FastRoutes(srv)
			if routes != 2 || fast == 0 {
				t.Fatalf("after binding: %d routes, %d datagrams relayed fast; want 2 routes and some", routes, fast)
			}

			server.ExpireFastRoutes(srv)
			exchangeBoth(t, a, b, 5, "expired")
			if r, f := server.FastRoutes(srv); r != 0 || f != fast {
				t.Fatalf("expired routes: %d live, fast datagrams %d -> %d; want pion to relay", r, fast, f)
			}

			if err := a.Close(); err != nil {
				t.Fatal(err)
			}
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(turnTestTimeout)
			for {
				st, _ := srv.TURNStats()
				if st.Allocations == 0 && server.FastRouteCount(srv) == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("allocations %d, routes %d after both closed", st.Allocations, server.FastRouteCount(srv))
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

// burst sends n datagrams from one allocation before the other reads
// them, and checks each arrives once, intact.
func burst(t *testing.T, from, to *relay.Allocation, n int) {
	t.Helper()
	for i := range n {
		msg := fmt.Sprintf("burst %03d", i)
		if _, err := from.Conn.WriteTo([]byte(msg), net.UDPAddrFromAddrPort(to.Relayed)); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	buf := make([]byte, 1500)
	for len(seen) < n {
		_ = to.Conn.SetReadDeadline(time.Now().Add(turnTestTimeout))
		k, src, err := to.Conn.ReadFrom(buf)
		if err != nil {
			t.Fatalf("burst: %d of %d arrived (%v)", len(seen), n, err)
		}
		msg := string(buf[:k])
		var i int
		if _, err := fmt.Sscanf(msg, "burst %03d", &i); err != nil || i >= n || seen[msg] || src.String() != from.Relayed.String() {
			t.Fatalf("burst: unexpected %q from %v", msg, src)
		}
		seen[msg] = true
	}
}
