//go:build linux

package natclass_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/natlab/natlab/internal/labtest"
	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/testnet"
)

// TestTracePeerKernelICMPSpent traces right after a burst of opening
// packets spent the internet router's ICMP budget for site a (Linux's
// per-destination token bucket, icmp_ratelimit and
// net.ipv6.icmp.ratelimit set to the documented 1000 ms in the lab's
// internet router so both families spend it alike): the router answers
// the first round of the trace with silence, exactly as a peer's router
// on one segment does. The trace must still count the router between on
// the routed topology (it asks again after the refill) and none on the
// shared segment, for IPv4 and IPv6.
func TestTracePeerKernelICMPSpent(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		for _, seg := range testnet.Segments() {
			name := fmt.Sprintf("ipv4/%s", seg)
			if v6 {
				name = fmt.Sprintf("ipv6/%s", seg)
			}
			t.Run(name, func(t *testing.T) { traceAfterBurst(t, seg, v6) })
		}
	}
}

func traceAfterBurst(t *testing.T, seg testnet.Segment, v6 bool) {
	top, err := testnet.PairTopology("port-restricted-cone", "port-restricted-cone")
	if v6 {
		top, err = testnet.IPv6Topology("nat66", "nat66")
	}
	if err != nil {
		t.Fatal(err)
	}
	top.Segment = seg
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lab := labtest.Kernel(t, ctx, top)
	inet, err := lab.Server.Command(ctx, "ip", "netns", "exec", "natlab-"+lab.ID+"-inet",
		"sysctl", "-qw", "net.ipv4.icmp_ratelimit=1000", "net.ipv6.icmp.ratelimit=1000")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := inet.CombinedOutput(); err != nil {
		t.Fatalf("set the internet router's ICMP rate limits: %v: %s", err, out)
	}
	a, b := lab.Sites[0], lab.Sites[1]
	to := b.Public
	if v6 {
		to = b.Public6
	}
	want := 1
	if seg == testnet.Shared {
		want = 0
	}
	burst(t, a.Host, to, 2, 50)
	start := time.Now()
	pp := natclass.TracePeer(ctx, a.Host.Net, to, 2, time.Millisecond)
	t.Logf("after the burst (%v): hops %v, routers between %d %s", time.Since(start).Round(time.Millisecond), pp.Hops, deref(pp.RoutersBetween), pp.Reason)
	if pp.RoutersBetween == nil || *pp.RoutersBetween != want {
		t.Errorf("routers between %d (%s), want %d", deref(pp.RoutersBetween), pp.Reason, want)
	}
}

// burst sends n packets from h toward to's discard port with a TTL (hop
// limit) that expires them at the first router beyond h's NAT, as
// opening packets do, spending that router's ICMP budget for h's site.
func burst(t *testing.T, h *testnet.Host, to netip.Addr, ttl, n int) {
	t.Helper()
	network, local := "udp4", "0.0.0.0:0"
	if to.Is6() {
		network, local = "udp6", "[::]:0"
	}
	c, err := h.Net.ListenPacket(network, local)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if to.Is6() {
		err = ipv6.NewPacketConn(c).SetHopLimit(ttl)
	} else {
		err = ipv4.NewPacketConn(c).SetTTL(ttl)
	}
	if err != nil {
		t.Fatal(err)
	}
	dst := net.UDPAddrFromAddrPort(netip.AddrPortFrom(to, 9))
	for range n {
		if _, err := c.WriteTo([]byte("spend"), dst); err != nil {
			t.Fatal(err)
		}
	}
}

// TestTracePeerKernelNoTimeToAsk gives the trace a deadline too near to
// ask again after an ICMP refill: its silent end is then unchecked, and
// the count is left unmeasured (never 0) with the reason.
func TestTracePeerKernelNoTimeToAsk(t *testing.T) {
	top, err := testnet.PairTopology("port-restricted-cone", "port-restricted-cone")
	if err != nil {
		t.Fatal(err)
	}
	top.Segment = testnet.Shared
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lab := labtest.Kernel(t, ctx, top)
	short, cancelShort := context.WithTimeout(ctx, 800*time.Millisecond)
	defer cancelShort()
	pp := natclass.TracePeer(short, lab.Sites[0].Host.Net, lab.Sites[1].Public, 2, time.Millisecond)
	t.Logf("hops %v, routers between %d: %s", pp.Hops, deref(pp.RoutersBetween), pp.Reason)
	if pp.RoutersBetween != nil || !strings.Contains(pp.Reason, "no time to ask again") {
		t.Errorf("routers between %d (%q), want unmeasured for want of time", deref(pp.RoutersBetween), pp.Reason)
	}
	if len(pp.Hops) == 0 || pp.Hops[0] != "10.0.0.1" {
		t.Errorf("hops %v, want site a's router first", pp.Hops)
	}
}
