//go:build linux

package testnet

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/transport/v4"

	"github.com/natlab/natlab/natclass"
)

const (
	// kernNegativeWait is how long a test waits before concluding a packet was
	// filtered: lab links without delay answer in well under a
	// millisecond, so 300 ms is generous even under -race on two cores.
	kernNegativeWait = 300 * time.Millisecond
	// kernReplyWait bounds a positive exchange before it is retransmitted.
	kernReplyWait = time.Second
	// kernReplyTries is how often a request is sent before giving up.
	kernReplyTries = 3
)

// kernEchoPorts are the two ports the test echo server listens on, on both
// server addresses: four sockets, as an RFC 5780 server has.
var kernEchoPorts = [2]uint16{3478, 3479}

// kernelLab starts a lab on the kernel backend, skipping the test when the
// machine cannot run one.
func kernStartLab(t testing.TB, top Topology) *Lab {
	t.Helper()
	if _, err := os.Stat("/proc/self/ns/net"); err != nil {
		t.Skipf("kernel lab: no network namespace support: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lab, err := Start(ctx, top, Kernel)
	if errors.Is(err, ErrNeedPrivileges) {
		t.Skipf("kernel lab: %v", err)
	}
	if err != nil {
		t.Fatalf("start kernel lab: %v", err)
	}
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Errorf("close lab: %v", err)
		}
	})
	return lab
}

// kernEcho answers "<socket index> <delay ms>" by sending, from socket
// <index> after the delay, the address the request came from.
type kernEcho struct {
	conns []net.PacketConn
	addrs []netip.AddrPort
	wg    sync.WaitGroup
}

func kernStartEcho(t testing.TB, h *Host) *kernEcho {
	t.Helper()
	e := &kernEcho{}
	for _, ip := range ServerAddrs {
		for _, port := range kernEchoPorts {
			ap := netip.AddrPortFrom(ip, port)
			c, err := h.Net.ListenPacket("udp4", ap.String())
			if err != nil {
				t.Fatalf("echo listen %v: %v", ap, err)
			}
			e.conns = append(e.conns, c)
			e.addrs = append(e.addrs, ap)
		}
	}
	for _, c := range e.conns {
		e.wg.Add(1)
		go e.serve(c)
	}
	t.Cleanup(func() {
		for _, c := range e.conns {
			c.Close()
		}
		e.wg.Wait()
	})
	return e
}

func (e *kernEcho) serve(c net.PacketConn) {
	defer e.wg.Done()
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return
		}
		var idx, ms int
		if _, err := fmt.Sscanf(string(buf[:n]), "%d %d", &idx, &ms); err != nil || idx < 0 || idx >= len(e.conns) {
			continue
		}
		out := e.conns[idx]
		reply := []byte(from.String())
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			time.Sleep(time.Duration(ms) * time.Millisecond)
			_, _ = out.WriteTo(reply, from)
		}()
	}
}

// kernAsk sends a request from c to the echo socket to and waits up to wait
// for the reply, which should come from socket from after delay. It
// returns the address the server saw.
func kernAsk(t testing.TB, c net.PacketConn, to netip.AddrPort, from int, delay, wait time.Duration, tries int) (netip.AddrPort, bool) {
	t.Helper()
	buf := make([]byte, 1500)
	for range tries {
		if _, err := c.WriteTo(fmt.Appendf(nil, "%d %d", from, delay.Milliseconds()), net.UDPAddrFromAddrPort(to)); err != nil {
			t.Fatalf("send to %v: %v", to, err)
		}
		deadline := time.Now().Add(delay + wait)
		for {
			_ = c.SetReadDeadline(deadline)
			n, _, err := c.ReadFrom(buf)
			if err != nil {
				break
			}
			ap, err := netip.ParseAddrPort(string(buf[:n]))
			if err != nil {
				continue // not an echo reply (a kernHairpin probe, say)
			}
			return ap, true
		}
	}
	return netip.AddrPort{}, false
}

func kernListen(t testing.TB, n transport.Net) net.PacketConn {
	t.Helper()
	c, err := n.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func kernLocalPort(c net.PacketConn) uint16 { return c.LocalAddr().(*net.UDPAddr).AddrPort().Port() }

// kernTCPEcho serves the observed remote address on one TCP connection each.
func kernTCPEcho(t testing.TB, h *Host, ap netip.AddrPort) {
	t.Helper()
	l, err := h.Net.ListenTCP("tcp4", net.TCPAddrFromAddrPort(ap))
	if err != nil {
		t.Fatalf("tcp listen %v: %v", ap, err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_, _ = fmt.Fprintf(c, "%s\n", c.RemoteAddr())
			c.Close()
		}
	}()
	t.Cleanup(func() { l.Close(); wg.Wait() })
}

func kernAskTCP(t testing.TB, n transport.Net, to netip.AddrPort) (local, seen netip.AddrPort) {
	t.Helper()
	d := n.CreateDialer(&net.Dialer{Timeout: 5 * time.Second})
	c, err := d.Dial("tcp4", to.String())
	if err != nil {
		t.Fatalf("tcp dial %v: %v", to, err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("tcp read from %v: %v", to, err)
	}
	seen, err = netip.ParseAddrPort(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("tcp reply %q: %v", line, err)
	}
	return c.LocalAddr().(*net.TCPAddr).AddrPort(), seen
}

// TestKernelPresets checks every preset's mapping, port allocation,
// filtering, hairpinning and TCP with real sockets through real NAT.
func TestKernelPresets(t *testing.T) {
	for _, name := range Presets() {
		t.Run(name, func(t *testing.T) {
			top, err := PairTopology(name, "")
			if err != nil {
				t.Fatal(err)
			}
			lab := kernStartLab(t, top)
			site := lab.Site("a")
			want := site.Spec.NAT.Expect()
			echo := kernStartEcho(t, lab.Server)
			tcpServer := netip.AddrPortFrom(ServerAddrs[0], 8080)
			kernTCPEcho(t, lab.Server, tcpServer)
			hostNet := site.Host.Net
			nat := want.NATType != natclass.Open

			// TCP passes every preset, UDP-blocked included, with the
			// router's TCP behaviour (which may differ from its UDP).
			local, seen := kernAskTCP(t, hostNet, tcpServer)
			if seen.Addr() != site.Public {
				t.Errorf("tcp: server saw %v, want address %v", seen, site.Public)
			}
			wantTCP := site.Spec.NAT.ExpectTCP()
			if preserve := wantTCP.Allocation == natclass.Preserving || !nat; preserve != (seen.Port() == local.Port()) {
				t.Errorf("tcp: server saw port %d from local port %d, want the port kept: %v", seen.Port(), local.Port(), preserve)
			}

			if want.NATType == natclass.UDPBlocked {
				c := kernListen(t, hostNet)
				if ap, ok := kernAsk(t, c, echo.addrs[0], 0, 0, kernNegativeWait, 1); ok {
					t.Fatalf("udp-blocked: got a UDP reply (server saw %v)", ap)
				}
				return
			}

			// Mapping and allocation: one socket, three destinations.
			c := kernListen(t, hostNet)
			var mapped []netip.AddrPort
			for _, i := range []int{0, 1, 2} { // (ip0,p0), (ip0,p1), (ip1,p0)
				ap, ok := kernAsk(t, c, echo.addrs[i], i, 0, kernReplyWait, kernReplyTries)
				if !ok {
					t.Fatalf("no reply from %v", echo.addrs[i])
				}
				if ap.Addr() != site.Public {
					t.Errorf("server %v saw %v, want address %v", echo.addrs[i], ap, site.Public)
				}
				mapped = append(mapped, ap)
			}
			t.Logf("local port %d mapped to %v", kernLocalPort(c), mapped)
			switch want.Mapping {
			case natclass.EndpointIndependent:
				if mapped[0] != mapped[1] || mapped[0] != mapped[2] {
					t.Errorf("endpoint-independent mapping: got %v", mapped)
				}
			case natclass.AddressAndPortDependent:
				if mapped[0] == mapped[1] || mapped[0] == mapped[2] || mapped[1] == mapped[2] {
					t.Errorf("address-and-port-dependent mapping: got %v", mapped)
				}
			}
			kernCheckAllocation(t, want, site.Spec.NAT, kernLocalPort(c), mapped)

			// Filtering: a fresh socket per probe, so that no inbound
			// flow is recorded on a mapping another probe uses.
			otherIP := kernFilterProbe(t, hostNet, echo, 0, 2)   // reply from (ip1,p0)
			otherPort := kernFilterProbe(t, hostNet, echo, 0, 1) // reply from (ip0,p1)
			wantIP := want.Filtering == natclass.EndpointIndependent
			wantPort := wantIP || want.Filtering == natclass.AddressDependent
			if otherIP != wantIP || otherPort != wantPort {
				t.Errorf("%s filtering: reply from other IP %v (want %v), from other port %v (want %v)",
					want.Filtering, otherIP, wantIP, otherPort, wantPort)
			}

			// Hairpinning: a second socket of the host through the
			// router's public address.
			if want.Hairpinning != natclass.NotChecked {
				c1, c2 := kernListen(t, hostNet), kernListen(t, hostNet)
				m2, ok := kernAsk(t, c2, echo.addrs[0], 0, 0, kernReplyWait, kernReplyTries)
				if !ok {
					t.Fatal("no reply to the kernHairpin target")
				}
				if _, ok := kernAsk(t, c1, echo.addrs[0], 0, 0, kernReplyWait, kernReplyTries); !ok {
					t.Fatal("no reply to the kernHairpin source")
				}
				m1, _ := kernAsk(t, c1, echo.addrs[0], 0, 0, kernReplyWait, kernReplyTries)
				got, from := kernHairpin(t, c1, c2, m2)
				if got != (want.Hairpinning == natclass.Yes) {
					t.Errorf("hairpinning: got %v, want %v", got, want.Hairpinning)
				}
				if got && from != m1 {
					t.Errorf("hairpinned packet came from %v, want the sender's mapping %v", from, m1)
				}
			}
		})
	}
}

// kernFilterProbe asks echo socket to (from a fresh socket) to reply from socket from
// and reports whether the reply came through.
func kernFilterProbe(t *testing.T, n transport.Net, e *kernEcho, to, from int) bool {
	t.Helper()
	c := kernListen(t, n)
	// Open the mapping first and make sure it works; only then test.
	if _, ok := kernAsk(t, c, e.addrs[to], to, 0, kernReplyWait, kernReplyTries); !ok {
		t.Fatalf("no reply from %v", e.addrs[to])
	}
	_, ok := kernAsk(t, c, e.addrs[to], from, 0, kernNegativeWait, 1)
	return ok
}

// kernHairpin sends from c1 to c2's public mapping m2 and reports whether c2
// received it, and from where.
func kernHairpin(t *testing.T, c1, c2 net.PacketConn, m2 netip.AddrPort) (bool, netip.AddrPort) {
	t.Helper()
	if _, err := c1.WriteTo([]byte("hairpin"), net.UDPAddrFromAddrPort(m2)); err != nil {
		t.Fatalf("hairpin send: %v", err)
	}
	buf := make([]byte, 1500)
	_ = c2.SetReadDeadline(time.Now().Add(kernNegativeWait))
	for {
		n, from, err := c2.ReadFrom(buf)
		if err != nil {
			return false, netip.AddrPort{}
		}
		if string(buf[:n]) == "hairpin" {
			return true, from.(*net.UDPAddr).AddrPort()
		}
	}
}

func kernCheckAllocation(t *testing.T, want Expected, n NAT, local uint16, mapped []netip.AddrPort) {
	t.Helper()
	ports := make([]int, len(mapped))
	for i, m := range mapped {
		ports[i] = int(m.Port())
	}
	switch want.Allocation {
	case natclass.Preserving:
		for _, p := range ports {
			if p != int(local) {
				t.Errorf("preserving allocation: local port %d mapped to %v", local, ports)
				break
			}
		}
	case natclass.Sequential:
		step := n.Step
		if step == 0 {
			step = 1
		}
		for i := 1; i < len(ports); i++ {
			if ports[i]-ports[i-1] != step {
				t.Errorf("sequential allocation (step %d): ports %v", step, ports)
				break
			}
		}
	case natclass.Random:
		sequential := true
		for i := 1; i < len(ports); i++ {
			if d := ports[i] - ports[i-1]; d < 0 || d > 8 {
				sequential = false
			}
		}
		if sequential || slices.Contains(ports, int(local)) {
			t.Errorf("random allocation: local port %d mapped to %v, which looks predictable", local, ports)
		}
	}
}

// TestKernelMappingVariants checks mappings the presets do not use:
// endpoint-independent with a non-preserving allocator, and
// address-dependent.
func TestKernelMappingVariants(t *testing.T) {
	eim, adm, apdf := natclass.EndpointIndependent, natclass.AddressDependent, natclass.AddressAndPortDependent
	for _, tc := range []struct {
		name string
		nat  NAT
		// same[i] says whether destination i+1 shares destination 0's mapping.
		same [2]bool
	}{
		{"eim-random", NAT{Mapping: eim, Filtering: apdf, Allocation: natclass.Random}, [2]bool{true, true}},
		{"eim-sequential", NAT{Mapping: eim, Filtering: apdf, Allocation: natclass.Sequential}, [2]bool{true, true}},
		{"adm-random", NAT{Mapping: adm, Filtering: apdf, Allocation: natclass.Random}, [2]bool{true, false}},
		{"adm-sequential", NAT{Mapping: adm, Filtering: adm, Allocation: natclass.Sequential, Step: 3}, [2]bool{true, false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lab := kernStartLab(t, Topology{Sites: []SiteSpec{{Name: "a", NAT: tc.nat}}})
			echo := kernStartEcho(t, lab.Server)
			hn := lab.Site("a").Host.Net
			c := kernListen(t, hn)
			var mapped []netip.AddrPort
			for _, i := range []int{0, 1, 2} { // (ip0,p0), (ip0,p1), (ip1,p0)
				ap, ok := kernAsk(t, c, echo.addrs[i], i, 0, kernReplyWait, kernReplyTries)
				if !ok {
					t.Fatalf("no reply from %v", echo.addrs[i])
				}
				mapped = append(mapped, ap)
			}
			for i, same := range tc.same {
				if (mapped[i+1] == mapped[0]) != same {
					t.Errorf("mappings %v: destination %d shares the first mapping: %v, want %v", mapped, i+1, !same, same)
				}
			}
			if mapped[0].Port() == kernLocalPort(c) && tc.nat.Allocation == natclass.Random {
				t.Errorf("random allocation kept the local port %d", kernLocalPort(c))
			}
			if tc.nat.Allocation == natclass.Sequential {
				// The next new mapping takes the next port.
				c2 := kernListen(t, hn)
				ap, ok := kernAsk(t, c2, echo.addrs[0], 0, 0, kernReplyWait, kernReplyTries)
				step := max(tc.nat.Step, 1)
				last := mapped[len(mapped)-1].Port()
				if !tc.same[1] {
					last = max(last, mapped[0].Port())
				}
				if !ok || int(ap.Port())-int(last) != step {
					t.Errorf("sequential (step %d): mappings %v, then %v", step, mapped, ap)
				}
			}
		})
	}
}

// TestKernelConntrackTrap pins down the Linux behaviour the README's
// conntrack trap is about: an unsolicited inbound packet to a port-restricted NAT leaves an
// unreplied conntrack entry, and the host's later outbound packet to that
// peer collides with it and gets a different external port.
func TestKernelConntrackTrap(t *testing.T) {
	top, err := PairTopology("port-restricted-cone", "")
	if err != nil {
		t.Fatal(err)
	}
	lab := kernStartLab(t, top)
	echo := kernStartEcho(t, lab.Server)
	c := kernListen(t, lab.Site("a").Host.Net)
	m, ok := kernAsk(t, c, echo.addrs[0], 0, 0, kernReplyWait, kernReplyTries)
	if !ok {
		t.Fatal("no reply")
	}
	// The peer at (ip1,p1) fires first: dropped by the filter, but
	// recorded by conntrack.
	if _, ok := kernAsk(t, c, echo.addrs[0], 3, 0, kernNegativeWait, 1); ok {
		t.Fatal("port-restricted NAT let an unsolicited packet in")
	}
	m2, ok := kernAsk(t, c, echo.addrs[3], 3, 0, kernReplyWait, kernReplyTries)
	if !ok {
		t.Fatal("no reply from the peer")
	}
	if m2 == m {
		t.Errorf("outbound after an unsolicited inbound kept mapping %v; expected the conntrack clash to move it", m)
	}
	t.Logf("mapping %v, after the clash %v", m, m2)
}

// TestKernelSequentialStep checks a sequential allocator with step 2.
func TestKernelSequentialStep(t *testing.T) {
	lab := kernStartLab(t, Topology{Sites: []SiteSpec{{Name: "a", NAT: NAT{
		Mapping: natclass.AddressAndPortDependent, Filtering: natclass.AddressAndPortDependent,
		Allocation: natclass.Sequential, Step: 2,
	}}}})
	echo := kernStartEcho(t, lab.Server)
	var mapped []netip.AddrPort
	for i := range 4 {
		// A new socket each time: every new flow takes the next port.
		c := kernListen(t, lab.Site("a").Host.Net)
		ap, ok := kernAsk(t, c, echo.addrs[i], i, 0, kernReplyWait, kernReplyTries)
		if !ok {
			t.Fatalf("no reply from %v", echo.addrs[i])
		}
		mapped = append(mapped, ap)
	}
	n := lab.Site("a").Spec.NAT
	kernCheckAllocation(t, n.Expect(), n, 0, mapped)
}

// TestKernelMappingLifetime checks that an idle mapping expires after
// MappingLifetime: a reply delayed past it is dropped, one within it is not.
func TestKernelMappingLifetime(t *testing.T) {
	const life = 2 * time.Second
	lab := kernStartLab(t, Topology{Sites: []SiteSpec{{Name: "a", NAT: NAT{
		Mapping: natclass.EndpointIndependent, Filtering: natclass.EndpointIndependent,
		Allocation: natclass.Preserving, MappingLifetime: life,
	}}}})
	echo := kernStartEcho(t, lab.Server)
	hn := lab.Site("a").Host.Net
	var wg sync.WaitGroup
	results := map[time.Duration]bool{}
	var mu sync.Mutex
	for _, d := range []time.Duration{life / 4, life + 1500*time.Millisecond} {
		c := kernListen(t, hn)
		wg.Add(1)
		go func() {
			defer wg.Done()
			// From the other address and port: only a live
			// endpoint-independent mapping lets it in.
			_, ok := kernAsk(t, c, echo.addrs[0], 3, d, kernNegativeWait, 1)
			mu.Lock()
			results[d] = ok
			mu.Unlock()
		}()
	}
	wg.Wait()
	for d, ok := range results {
		if wantOK := d < life; ok != wantOK {
			t.Errorf("reply after %v with a %v mapping lifetime: arrived %v, want %v", d, life, ok, wantOK)
		}
	}
}

// TestKernelDoubleNATAndOpen checks the addressing of a CGN site and an
// open site side by side.
func TestKernelDoubleNATAndOpen(t *testing.T) {
	for _, seg := range Segments() {
		t.Run(string(seg), func(t *testing.T) { kernDoubleNATAndOpen(t, seg) })
	}
}

func kernDoubleNATAndOpen(t *testing.T, seg Segment) {
	top, err := PairTopology("double-nat", "open")
	if err != nil {
		t.Fatal(err)
	}
	top.Segment = seg
	lab := kernStartLab(t, top)
	echo := kernStartEcho(t, lab.Server)
	a, b := lab.Site("a"), lab.Site("b")
	if !a.Host.Addr().IsPrivate() {
		t.Errorf("double-nat host address %v, want a private one", a.Host.Addr())
	}
	if b.Host.Addr() != b.Public {
		t.Errorf("open host address %v, want its public %v", b.Host.Addr(), b.Public)
	}
	for _, s := range []*Site{a, b} {
		c := kernListen(t, s.Host.Net)
		ap, ok := kernAsk(t, c, echo.addrs[0], 0, 0, kernReplyWait, kernReplyTries)
		if !ok {
			t.Fatalf("site %s: no reply", s.Spec.Name)
		}
		if want := netip.AddrPortFrom(s.Public, kernLocalPort(c)); ap != want {
			t.Errorf("site %s: server saw %v, want %v", s.Spec.Name, ap, want)
		}
	}
	// The two sites reach each other: b is open, so a can send to it
	// directly, and b answers through a's mapping.
	ca, cb := kernListen(t, a.Host.Net), kernListen(t, b.Host.Net)
	to := netip.AddrPortFrom(b.Public, kernLocalPort(cb))
	if _, err := ca.WriteTo([]byte("hello"), net.UDPAddrFromAddrPort(to)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	_ = cb.SetReadDeadline(time.Now().Add(kernReplyWait))
	n, from, err := cb.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("open host: %q, %v", buf[:n], err)
	}
	if _, err := cb.WriteTo([]byte("back"), from); err != nil {
		t.Fatal(err)
	}
	_ = ca.SetReadDeadline(time.Now().Add(kernReplyWait))
	if n, _, err := ca.ReadFrom(buf); err != nil || string(buf[:n]) != "back" {
		t.Fatalf("double-nat host: %q, %v", buf[:n], err)
	}
}

// TestKernelLinkShaping checks delay (TUN delay line) and loss (nftables
// numgen) on the WAN and server links.
func TestKernelLinkShaping(t *testing.T) {
	const (
		wanDelay    = 20 * time.Millisecond
		serverDelay = 10 * time.Millisecond
		loss        = 0.3
		samples     = 200
	)
	top := Topology{
		Sites: []SiteSpec{
			{Name: "a", NAT: presets["port-restricted-cone"], WAN: Link{Delay: wanDelay}},
			{Name: "b", NAT: presets["port-restricted-cone"], WAN: Link{Loss: loss}},
		},
		ServerLink: Link{Delay: serverDelay},
	}
	lab := kernStartLab(t, top)
	echo := kernStartEcho(t, lab.Server)

	c := kernListen(t, lab.Site("a").Host.Net)
	var rtts []time.Duration
	for range 5 {
		start := time.Now()
		if _, ok := kernAsk(t, c, echo.addrs[0], 0, 0, kernReplyWait, 1); !ok {
			t.Fatal("no reply over the delayed links")
		}
		rtts = append(rtts, time.Since(start))
	}
	slices.Sort(rtts)
	minRTT := 2 * (wanDelay + serverDelay)
	if rtts[0] < minRTT || rtts[len(rtts)/2] > minRTT+50*time.Millisecond {
		t.Errorf("rtts %v, want about %v", rtts, minRTT)
	}
	t.Logf("rtt with %v + %v one-way: %v", wanDelay, serverDelay, rtts)

	// The server link of this lab is delayed, not lossy: the losses below
	// are the WAN's, once on the way out and once on the way back.
	cb := kernListen(t, lab.Site("b").Host.Net)
	got := 0
	for range samples {
		if _, ok := kernAsk(t, cb, echo.addrs[0], 0, 0, 2*(serverDelay+10*time.Millisecond), 1); ok {
			got++
		}
	}
	want := samples * (1 - loss) * (1 - loss)
	if float64(got) < want*0.7 || float64(got) > want*1.3 {
		t.Errorf("%d of %d echoes through %.0f%% loss each way, want about %.0f", got, samples, loss*100, want)
	}
	t.Logf("%d of %d echoes through %.0f%% loss each way", got, samples, loss*100)
}

// TestKernelHostTools checks Interfaces, the dialer and listen config
// wrappers, and running a program inside a namespace.
func TestKernelHostTools(t *testing.T) {
	top, err := PairTopology("full-cone", "")
	if err != nil {
		t.Fatal(err)
	}
	lab := kernStartLab(t, top)
	site := lab.Site("a")
	ifs, err := site.Host.Net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ifc := range ifs {
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr() == site.Host.Addr() {
				found = true
			}
		}
	}
	if !found {
		t.Errorf("host interfaces %v lack %v", ifs, site.Host.Addr())
	}
	if _, err := site.Host.Net.InterfaceByName("eth0"); err != nil {
		t.Errorf("InterfaceByName(eth0): %v", err)
	}

	lc := lab.Server.Net.CreateListenConfig(&net.ListenConfig{})
	pc, err := lc.ListenPacket(context.Background(), "udp4", netip.AddrPortFrom(ServerAddrs[1], 5000).String())
	if err != nil {
		t.Fatalf("server ListenConfig: %v", err)
	}
	defer pc.Close()
	c := kernListen(t, site.Host.Net)
	if _, err := c.WriteTo([]byte("x"), net.UDPAddrFromAddrPort(netip.AddrPortFrom(ServerAddrs[1], 5000))); err != nil {
		t.Fatal(err)
	}
	_ = pc.SetReadDeadline(time.Now().Add(kernReplyWait))
	buf := make([]byte, 10)
	if _, from, err := pc.ReadFrom(buf); err != nil || from.(*net.UDPAddr).AddrPort().Addr() != site.Public {
		t.Fatalf("server got %v, %v; want a packet from %v", from, err, site.Public)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd, err := site.Router.Command(ctx, "conntrack", "-L", "-p", "udp")
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Skipf("conntrack tool: %v: %s", err, out)
	}
	if !strings.Contains(string(out), "dport=5000") {
		t.Errorf("router conntrack table lacks the flow:\n%s", out)
	}
}

// kernNamespaces lists the namespaces whose names start with prefix.
func kernNamespaces(t testing.TB, prefix string) []string {
	t.Helper()
	entries, err := os.ReadDir(netnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

func kernLabPrefix(l *Lab) string {
	id, _, _ := strings.Cut(strings.TrimPrefix(l.Server.Namespace, nsPrefix), "-")
	return nsPrefix + id + "-"
}

// TestKernelConcurrentLabs runs several labs side by side.
func TestKernelConcurrentLabs(t *testing.T) {
	const labs = 3
	top, err := PairTopology("full-cone", "symmetric")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		prefixes = map[string]bool{}
	)
	started := make([]*Lab, labs)
	var privErr error
	for i := range labs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lab, err := Start(context.Background(), top, Kernel)
			if errors.Is(err, ErrNeedPrivileges) {
				mu.Lock()
				privErr = err
				mu.Unlock()
				return
			}
			if err != nil {
				t.Errorf("lab %d: %v", i, err)
				return
			}
			started[i] = lab
		}()
	}
	wg.Wait()
	for _, l := range started {
		if l != nil {
			t.Cleanup(func() { l.Close() })
		}
	}
	if privErr != nil {
		t.Skipf("kernel lab: %v", privErr)
	}
	for i, l := range started {
		if l == nil {
			continue
		}
		p := kernLabPrefix(l)
		if prefixes[p] {
			t.Fatalf("lab %d reuses prefix %s", i, p)
		}
		prefixes[p] = true
		echo := kernStartEcho(t, l.Server)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, s := range l.Sites {
				c := kernListen(t, s.Host.Net)
				if _, ok := kernAsk(t, c, echo.addrs[0], 0, 0, kernReplyWait, kernReplyTries); !ok {
					mu.Lock()
					t.Errorf("lab %d site %s: no reply", i, s.Spec.Name)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	for _, l := range started {
		if l == nil {
			continue
		}
		if err := l.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		if left := kernNamespaces(t, kernLabPrefix(l)); len(left) > 0 {
			t.Errorf("after Close: %v remain", left)
		}
	}
}

// TestKernelTeardown checks that nothing of a lab survives Close, a failed
// start or a cancelled start, and that Clean removes leftovers but not
// live labs.
func TestKernelTeardown(t *testing.T) {
	top, err := PairTopology("double-nat", "full-cone")
	if err != nil {
		t.Fatal(err)
	}
	lab := kernStartLab(t, top)
	prefix := kernLabPrefix(lab)
	if n := len(kernNamespaces(t, prefix)); n != 7 { // inet, srv, a-r, a-in, a-h, b-r, b-h
		t.Errorf("lab has %d namespaces, want 7", n)
	}
	for _, h := range []*Host{lab.Server, lab.Site("a").Host, lab.Site("a").Router} {
		if len(h.Namespace) > 15+len(nsPrefix)+idBytes*2 || !strings.HasPrefix(h.Namespace, prefix) {
			t.Errorf("namespace %q", h.Namespace)
		}
	}
	if err := lab.Close(); err != nil {
		t.Fatal(err)
	}
	if err := lab.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if left := kernNamespaces(t, prefix); len(left) > 0 {
		t.Errorf("after Close: %v remain", left)
	}
	if _, err := lab.Site("a").Host.Net.ListenPacket("udp4", "0.0.0.0:0"); err == nil {
		t.Error("a closed lab's Net still opens sockets")
	}

	t.Run("failed start", func(t *testing.T) {
		injected := errors.New("injected failure")
		var failedID string
		kernelStartHook = func(id, stage string) error {
			if stage == "site b" {
				failedID = id
				return injected
			}
			return nil
		}
		defer func() { kernelStartHook = nil }()
		_, err := Start(context.Background(), top, Kernel)
		if !errors.Is(err, injected) {
			t.Fatalf("Start: %v, want the injected failure", err)
		}
		if left := kernNamespaces(t, nsPrefix+failedID+"-"); len(left) > 0 {
			t.Errorf("after a failed start: %v remain", left)
		}
		if _, err := os.Stat(lockDir + "/" + failedID + ".lock"); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("lock file of the failed lab: %v", err)
		}
	})

	t.Run("cancelled start", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		var id string
		kernelStartHook = func(i, stage string) error {
			id = i
			if stage == "server" {
				cancel()
			}
			return nil
		}
		defer func() { kernelStartHook = nil }()
		_, err := Start(ctx, top, Kernel)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Start: %v, want context.Canceled", err)
		}
		if left := kernNamespaces(t, nsPrefix+id+"-"); len(left) > 0 {
			t.Errorf("after a cancelled start: %v remain", left)
		}
	})

	t.Run("clean", func(t *testing.T) {
		live := kernStartLab(t, top)
		leaked := nsPrefix + "zz" + strconv.Itoa(os.Getpid()%10000) + "-x"
		if err := newNamedNS(leaked); err != nil {
			t.Fatal(err)
		}
		removed, err := Clean(context.Background())
		if err != nil {
			t.Fatalf("Clean: %v", err)
		}
		if !slices.Contains(removed, leaked) {
			t.Errorf("Clean removed %v, want %s among them", removed, leaked)
		}
		if left := kernNamespaces(t, leaked); len(left) > 0 {
			t.Errorf("after Clean: %v remain", left)
		}
		for _, r := range removed {
			if strings.HasPrefix(r, kernLabPrefix(live)) {
				t.Errorf("Clean removed %s of a live lab", r)
			}
		}
		if len(kernNamespaces(t, kernLabPrefix(live))) == 0 {
			t.Error("Clean removed the live lab")
		}
	})
}

// BenchmarkKernelStartClose measures bringing a two-site lab up and down.
func BenchmarkKernelStartClose(b *testing.B) {
	top, err := PairTopology("port-restricted-cone", "symmetric")
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		lab, err := Start(context.Background(), top, Kernel)
		if errors.Is(err, ErrNeedPrivileges) {
			b.Skipf("kernel lab: %v", err)
		}
		if err != nil {
			b.Fatal(err)
		}
		if err := lab.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// crashChildEnv makes the test binary, re-run by TestKernelCleanAfterCrash,
// start a lab and exit without closing it, as a crashed natlab would.
const crashChildEnv = "NATLAB_KERNEL_CRASH_CHILD"

// TestKernelCleanAfterCrash leaks a whole lab from a child process that
// exits without Close, and checks that Clean removes all of it.
func TestKernelCleanAfterCrash(t *testing.T) {
	top, err := PairTopology("double-nat", "symmetric")
	if err != nil {
		t.Fatal(err)
	}
	if os.Getenv(crashChildEnv) == "1" {
		lab, err := Start(context.Background(), top, Kernel)
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(2)
		}
		fmt.Println("prefix:", kernLabPrefix(lab))
		os.Exit(0) // no Close: the lab leaks
	}
	kernStartLab(t, Topology{}) // skips without privileges

	cmd := exec.Command(os.Args[0], "-test.run=^TestKernelCleanAfterCrash$")
	cmd.Env = append(os.Environ(), crashChildEnv+"=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	_, prefix, ok := strings.Cut(strings.TrimSpace(string(out)), "prefix: ")
	if !ok {
		t.Fatalf("child printed %q", out)
	}
	leaked := kernNamespaces(t, prefix)
	if len(leaked) != 7 {
		t.Fatalf("the crashed lab left %v, want its 7 namespaces", leaked)
	}
	removed, err := Clean(context.Background())
	if err != nil {
		t.Fatalf("Clean: %v", err)
	}
	for _, ns := range leaked {
		if !slices.Contains(removed, ns) {
			t.Errorf("Clean did not remove %s (removed %v)", ns, removed)
		}
	}
	if left := kernNamespaces(t, prefix); len(left) > 0 {
		t.Errorf("after Clean: %v remain", left)
	}
}

// TestKernelNoGoroutineLeak checks that Close stops everything the lab
// runs in this process (the delay lines).
func TestKernelNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	top := Topology{Sites: []SiteSpec{{Name: "a", NAT: presets["full-cone"], WAN: Link{Delay: 5 * time.Millisecond}}},
		ServerLink: Link{Delay: 5 * time.Millisecond}}
	lab, err := Start(context.Background(), top, Kernel)
	if errors.Is(err, ErrNeedPrivileges) {
		t.Skipf("kernel lab: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	srv, err := lab.Server.Net.ListenPacket("udp4", netip.AddrPortFrom(ServerAddrs[0], 7).String())
	if err != nil {
		t.Fatal(err)
	}
	c, err := lab.Site("a").Host.Net.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WriteTo([]byte("x"), net.UDPAddrFromAddrPort(netip.AddrPortFrom(ServerAddrs[0], 7))); err != nil {
		t.Fatal(err)
	}
	_ = srv.SetReadDeadline(time.Now().Add(kernReplyWait))
	if _, _, err := srv.ReadFrom(make([]byte, 10)); err != nil {
		t.Fatalf("over the delay lines: %v", err)
	}
	srv.Close()
	c.Close()
	if err := lab.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("%d goroutines after Close, %d before", n, before)
	}
}
