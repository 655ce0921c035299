package natclass

import (
	"context"
	"encoding/json"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pion/transport/v4"
	"github.com/pion/transport/v4/stdnet"

	"github.com/natlab/natlab/server"
)

func TestReadTrace(t *testing.T) {
	a := netip.MustParseAddr
	var none netip.Addr
	srv, pub := a("203.0.113.10"), a("198.51.100.10")
	hops := func(as ...netip.Addr) []netip.Addr {
		h := make([]netip.Addr, maxHops)
		copy(h, as)
		return h
	}
	tests := []struct {
		name       string
		hops       []netip.Addr
		end        int
		reached    bool
		mapped     netip.Addr
		nat        bool
		want       int
		wantHops   []string
		wantReason string // substring; "" when measured
	}{
		{"home router", hops(a("10.0.0.1"), a("198.51.100.1")), 3, true, pub, true, 1,
			[]string{"10.0.0.1", "198.51.100.1", "203.0.113.10"}, ""},
		{"home router and CGN", hops(a("10.0.1.1"), a("100.64.1.1"), a("198.51.100.1")), 4, true, pub, true, 2,
			[]string{"10.0.1.1", "100.64.1.1", "198.51.100.1", "203.0.113.10"}, ""},
		{"no NAT", hops(a("198.51.100.110"), a("198.51.100.1")), 3, true, pub, false, 0,
			[]string{"198.51.100.110", "198.51.100.1", "203.0.113.10"}, ""},
		{"no NAT, private transit", hops(a("10.9.9.9")), 2, true, pub, false, 0,
			[]string{"10.9.9.9", "203.0.113.10"}, ""},
		{"server on the link", hops(), 1, true, a("127.0.0.1"), false, 0, []string{"203.0.113.10"}, ""},
		{"NAT answering from its public address", hops(pub, a("198.51.100.1")), 3, true, pub, true, 1,
			[]string{"198.51.100.10", "198.51.100.1", "203.0.113.10"}, ""},
		{"silent hop before a private one", hops(none, a("100.64.1.1"), a("198.51.100.1")), 4, true, pub, true, 2,
			[]string{"*", "100.64.1.1", "198.51.100.1", "203.0.113.10"}, ""},
		{"silent hop at the boundary", hops(a("10.0.0.1"), none, a("198.51.100.1")), 4, true, pub, true, 0,
			[]string{"10.0.0.1", "*", "198.51.100.1", "203.0.113.10"}, "hop 2 sent no ICMP error"},
		{"server unanswered, public hop seen", hops(a("10.0.0.1"), a("198.51.100.1")), 0, false, pub, true, 1,
			[]string{"10.0.0.1", "198.51.100.1"}, ""},
		{"never leaves private space", hops(a("10.0.0.1"), a("10.1.0.1"), a("10.2.0.1"), a("10.3.0.1"), a("10.4.0.1"), a("10.5.0.1")), 0, false, pub, true, 0,
			[]string{"10.0.0.1", "10.1.0.1", "10.2.0.1", "10.3.0.1", "10.4.0.1", "10.5.0.1"}, "neither a public hop nor the server"},
		{"nothing answered", hops(), 0, false, pub, true, 0, nil, "neither a public hop nor the server"},
		{"unreachable inside", hops(a("10.0.0.1"), a("100.64.0.1")), 2, false, pub, true, 0,
			[]string{"10.0.0.1", "100.64.0.1"}, "destination unreachable"},
		{"NAT not on the path", hops(a("198.51.100.1")), 2, true, pub, true, 0,
			[]string{"198.51.100.1", "203.0.113.10"}, "the NAT does not show"},
		// IPv6: a firewall without translation is no NAT, whatever its
		// hop; NAT66 and NPTv6 routers answer from the unique-local LAN.
		{"IPv6 firewall", hops(a("2001:db8:200::1"), a("2001:db8:100::1")), 3, true, a("2001:db8:200::5"), false, 0,
			[]string{"2001:db8:200::1", "2001:db8:100::1", "203.0.113.10"}, ""},
		{"IPv6 NAT66", hops(a("fd00::1"), a("2001:db8:100::1")), 3, true, a("2001:db8:100::2"), true, 1,
			[]string{"fd00::1", "2001:db8:100::1", "203.0.113.10"}, ""},
		{"IPv6 NAT66 answering from its WAN", hops(a("2001:db8:100::2"), a("2001:db8:100::1")), 3, true, a("2001:db8:100::2"), true, 1,
			[]string{"2001:db8:100::2", "2001:db8:100::1", "203.0.113.10"}, ""},
		{"IPv6 NAT66 with a global inside", hops(a("2001:db8:300::1"), a("2001:db8:100::1")), 3, true, a("2001:db8:100::2"), true, 0,
			[]string{"2001:db8:300::1", "2001:db8:100::1", "203.0.113.10"}, "the NAT does not show"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := readTrace(tt.hops, tt.end, tt.reached, srv, tt.mapped, tt.nat)
			if !slices.Equal(o.hops, tt.wantHops) {
				t.Errorf("hops %q, want %q", o.hops, tt.wantHops)
			}
			if tt.wantReason == "" && o.reason != "" {
				t.Errorf("not measured: %s", o.reason)
			}
			if tt.wantReason != "" && !strings.Contains(o.reason, tt.wantReason) {
				t.Errorf("reason %q, want %q", o.reason, tt.wantReason)
			}
			if o.reason == "" && o.depth != tt.want {
				t.Errorf("depth %d, want %d", o.depth, tt.want)
			}
		})
	}
	t.Run("private server", func(t *testing.T) {
		o := readTrace(hops(a("10.0.0.1")), 2, true, a("10.1.0.10"), a("10.0.0.2"), true)
		if !strings.Contains(o.reason, "private address space") {
			t.Errorf("outcome %+v, want not measured", o)
		}
	})
}

func TestProfileHops(t *testing.T) {
	p := &Profile{Hints: []string{}}
	if got := p.OpeningTTL(); got != 0 {
		t.Errorf("unmeasured: opening TTL %d, want 0", got)
	}
	p.addHops(hopsOutcome{depth: 2, hops: []string{"10.0.1.1", "100.64.1.1", "198.51.100.1", "203.0.113.10"}})
	if got := p.OpeningTTL(); got != 3 {
		t.Errorf("depth 2: opening TTL %d, want 3", got)
	}
	if !slices.Equal(p.Hints, []string{HintDoubleNAT, HintCGNAT}) {
		t.Errorf("hints %v", p.Hints)
	}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"nat_depth":2,"hops":["10.0.1.1","100.64.1.1","198.51.100.1","203.0.113.10"]`) {
		t.Errorf("JSON %s", b)
	}
	zero := &Profile{}
	zero.addHops(hopsOutcome{depth: 0, hops: []string{"203.0.113.10"}})
	if got := zero.OpeningTTL(); got != minOpeningTTL {
		t.Errorf("depth 0: opening TTL %d, want %d", got, minOpeningTTL)
	}
	if b, _ := json.Marshal(zero); !strings.Contains(string(b), `"nat_depth":0`) {
		t.Errorf("a measured depth 0 must show: %s", b)
	}
	var none *Profile
	if none.OpeningTTL() != 0 {
		t.Error("nil profile")
	}
	un := &Profile{}
	un.addHops(hopsOutcome{reason: "why"})
	if b, _ := json.Marshal(un); strings.Contains(string(b), `"nat_depth":`) || len(un.NotRun) != 1 || un.NotRun[0].Test != TestNATDepth {
		t.Errorf("unmeasured profile %s", b)
	}
}

// opaqueNet hands out sockets that hide their kernel socket, like a lab's
// emulated network.
type opaqueNet struct{ transport.Net }

func (n opaqueNet) ListenPacket(network, address string) (net.PacketConn, error) {
	c, err := n.Net.ListenPacket(network, address)
	if err != nil {
		return nil, err
	}
	return struct{ net.PacketConn }{c}, nil
}

// TestHopsLoopback traces to a server on loopback: reached at TTL 1, no
// NAT. Without kernel sockets the trace is not run, with the reason. In
// neither case does the check wait out the trace's timer.
func TestHopsLoopback(t *testing.T) {
	std, err := stdnet.NewNet()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.Listen(std, server.Config{Addrs: server.Addrs{Primary: netip.MustParseAddrPort("127.0.0.1:0")}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	srv6, err := server.Listen(std, server.Config{Addrs: server.Addrs{Primary: netip.MustParseAddrPort("[::1]:0")}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv6.Close()
	for _, tc := range []struct {
		name string
		n    transport.Net
		srv  netip.AddrPort
		fam  Family
	}{{"kernel", std, srv.Addrs().Primary, IPv4}, {"opaque", opaqueNet{std}, srv.Addrs().Primary, IPv4},
		{"kernel6", std, srv6.Addrs().Primary, IPv6}, {"opaque6", opaqueNet{std}, srv6.Addrs().Primary, IPv6}} {
		t.Run(tc.name, func(t *testing.T) {
			if strings.HasPrefix(tc.name, "kernel") && runtime.GOOS != "linux" {
				t.Skip("the trace reads IP_RECVERR, which is Linux only")
			}
			before := runtime.NumGoroutine()
			p, err := Discover(context.Background(), Options{Net: tc.n, Servers: []string{tc.srv.String()}, AllocSamples: -1, Family: tc.fam})
			if err != nil {
				t.Fatal(err)
			}
			var nr []NotRun
			for _, x := range p.NotRun {
				if x.Test == TestNATDepth {
					nr = append(nr, x)
				}
			}
			switch tc.name {
			case "kernel", "kernel6":
				if lo := tc.srv.Addr().String(); p.NATDepth == nil || *p.NATDepth != 0 || !slices.Equal(p.Hops, []string{lo}) || len(nr) != 0 {
					t.Errorf("nat_depth %v hops %q not_run %+v, want 0, [%s]", p.NATDepth, p.Hops, nr, lo)
				}
			default:
				if p.NATDepth != nil || p.Hops != nil || len(nr) != 1 || !strings.Contains(nr[0].Reason, "not a kernel socket") {
					t.Errorf("nat_depth %v hops %q not_run %+v, want not run", p.NATDepth, p.Hops, nr)
				}
			}
			if d := time.Duration(p.DurationMillis * float64(time.Millisecond)); d >= minHopWait {
				t.Errorf("check took %v: waited for the trace", d)
			}
			for end := time.Now().Add(time.Second); runtime.NumGoroutine() > before && time.Now().Before(end); {
				time.Sleep(5 * time.Millisecond)
			}
			if g := runtime.NumGoroutine(); g > before {
				t.Errorf("%d goroutines after Discover, %d before", g, before)
			}
		})
	}
}

// TestTraceLoopbackEnds: a trace to a closed port ends at the ICMP port
// unreachable the kernel queues (the error queue path), and one to a
// socket that never answers ends at the trace's wait, releasing all.
func TestTraceLoopbackEnds(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the trace reads IP_RECVERR, which is Linux only")
	}
	std, err := stdnet.NewNet()
	if err != nil {
		t.Fatal(err)
	}
	mute, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer mute.Close()
	closed, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.LocalAddr().(*net.UDPAddr).AddrPort()
	_ = closed.Close()
	// The same over IPv6: ICMPv6 port unreachable (type 1 code 4) from
	// IPV6_RECVERR's queue.
	mute6, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer mute6.Close()
	closed6, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr6 := closed6.LocalAddr().(*net.UDPAddr).AddrPort()
	_ = closed6.Close()
	d := &discovery{opts: Options{Net: std}}
	for _, tc := range []struct {
		name    string
		to      netip.AddrPort
		reached bool
		minTime time.Duration
	}{
		{"closed port", closedAddr, true, 0},
		{"mute", mute.LocalAddr().(*net.UDPAddr).AddrPort(), false, minHopWait},
		{"closed port IPv6", closedAddr6, true, 0},
		{"mute IPv6", mute6.LocalAddr().(*net.UDPAddr).AddrPort(), false, minHopWait},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := runtime.NumGoroutine()
			start := time.Now()
			tr, err := newTrace(d.opts.Net, tc.to, minHopWait)
			if err != nil {
				t.Fatal(err)
			}
			hops, end, reached := tr.gather(context.Background())
			el := time.Since(start)
			if reached != tc.reached || (reached && end != 1) {
				t.Errorf("end %d reached %v hops %v, want reached %v at 1", end, reached, hops, tc.reached)
			}
			if el < tc.minTime || el > minHopWait+time.Second {
				t.Errorf("took %v", el)
			}
			lo := tc.to.Addr()
			if o := readTrace(hops, end, reached, lo, lo, false); reached && (o.reason != "" || !slices.Equal(o.hops, []string{lo.String()})) {
				t.Errorf("outcome %+v", o)
			}
			for end := time.Now().Add(time.Second); runtime.NumGoroutine() > before && time.Now().Before(end); {
				time.Sleep(5 * time.Millisecond)
			}
			if g := runtime.NumGoroutine(); g > before {
				t.Errorf("%d goroutines after the trace, %d before", g, before)
			}
		})
	}
}
