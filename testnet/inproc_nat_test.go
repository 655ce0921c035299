package testnet

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/natlab/natlab/natclass"
)

// natPresets are the presets that pass UDP, for the behaviour tables.
var natPresets = []string{"open", "full-cone", "restricted-cone", "port-restricted-cone", "symmetric", "symmetric-sequential", "double-nat"}

func TestInProcessMapping(t *testing.T) {
	for _, name := range natPresets {
		t.Run(name, func(t *testing.T) {
			n := presetNAT(t, name)
			lab := startLab(t, oneSite(n))
			startEcho(t, lab)
			site := lab.Site("a")
			c := listen(t, site.Host)
			var m [4]netip.AddrPort
			for i := range m {
				m[i] = ask(t, c, echoEndpoint(i))
				if m[i].Addr() != site.Public {
					t.Fatalf("endpoint %d saw %v, want address %v", i, m[i], site.Public)
				}
			}
			var got natclass.Behavior
			switch {
			case m[0] == m[1] && m[0] == m[2] && m[0] == m[3]:
				got = natclass.EndpointIndependent
			case m[0] == m[1] && m[2] == m[3] && m[0] != m[2]:
				got = natclass.AddressDependent
			case m[0] != m[1] && m[0] != m[2] && m[0] != m[3] && m[1] != m[2] && m[1] != m[3] && m[2] != m[3]:
				got = natclass.AddressAndPortDependent
			}
			if want := n.Expect().Mapping; got != want {
				t.Fatalf("mapping %q (mapped %v), want %q", got, m, want)
			}
			if name == "open" && m[0] != addrPort(c.LocalAddr()) {
				t.Fatalf("open host mapped to %v, want its own %v", m[0], c.LocalAddr())
			}
		})
	}
}

func TestInProcessMappingAddressDependent(t *testing.T) {
	lab := startLab(t, oneSite(NAT{Mapping: natclass.AddressDependent, Filtering: natclass.AddressDependent, Allocation: natclass.Random}))
	startEcho(t, lab)
	c := listen(t, lab.Site("a").Host)
	var m [4]netip.AddrPort
	for i := range m {
		m[i] = ask(t, c, echoEndpoint(i))
	}
	if m[0] != m[1] || m[2] != m[3] || m[0] == m[2] {
		t.Fatalf("address-dependent mapping gave %v", m)
	}
	views := lab.NATs("a")
	if len(views) != 1 || len(views[0].Mappings) != 2 {
		t.Fatalf("want one layer with two mappings, got %+v", views)
	}
	for _, v := range views[0].Mappings {
		if v.Remote.Port() != 0 || (v.Remote.Addr() != ServerAddrs[0] && v.Remote.Addr() != ServerAddrs[1]) {
			t.Fatalf("mapping keyed on %v, want a server address with port 0", v.Remote)
		}
	}
}

func TestInProcessFiltering(t *testing.T) {
	cases := append([]string{}, natPresets...)
	for _, name := range cases {
		t.Run(name, func(t *testing.T) {
			n := presetNAT(t, name)
			testFiltering(t, n, n.Expect().Filtering)
		})
	}
	// An open host behind a stateful firewall.
	t.Run("open-firewall", func(t *testing.T) {
		testFiltering(t, NAT{Filtering: natclass.AddressAndPortDependent}, natclass.AddressAndPortDependent)
	})
	t.Run("open-firewall-address", func(t *testing.T) {
		testFiltering(t, NAT{Filtering: natclass.AddressDependent}, natclass.AddressDependent)
	})
}

func testFiltering(t *testing.T, n NAT, want natclass.Behavior) {
	t.Helper()
	lab := startLab(t, oneSite(n))
	startEcho(t, lab)
	c := listen(t, lab.Site("a").Host)
	ask(t, c, echoEndpoint(0)) // open the mapping toward endpoint 0 only
	portChange, addrChange, both := reachable(t, c, 1), reachable(t, c, 2), reachable(t, c, 3)
	var got natclass.Behavior
	switch {
	case portChange && addrChange && both:
		got = natclass.EndpointIndependent
	case portChange && !addrChange && !both:
		got = natclass.AddressDependent
	case !portChange && !addrChange && !both:
		got = natclass.AddressAndPortDependent
	}
	if got != want {
		t.Fatalf("filtering %q (port change %v, address change %v, both %v), want %q", got, portChange, addrChange, both, want)
	}
	if want != natclass.EndpointIndependent {
		var filtered uint64
		for _, v := range lab.NATs("a") {
			filtered += v.Stats.DropFiltered
		}
		if filtered == 0 {
			t.Fatalf("no filtered drops counted: %+v", lab.NATs("a"))
		}
	}
}

func TestInProcessAllocation(t *testing.T) {
	apd := natclass.AddressAndPortDependent
	cases := []struct {
		name string
		nat  NAT
		step int // 0: not sequential
	}{
		{"preserving", presetNAT(t, "full-cone"), 0},
		{"sequential", presetNAT(t, "symmetric-sequential"), 1},
		{"sequential-step-7", NAT{Mapping: apd, Filtering: apd, Allocation: natclass.Sequential, Step: 7}, 7},
		{"random", presetNAT(t, "symmetric"), 0},
	}
	const sockets = 6
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			lab := startLab(t, oneSite(tc.nat))
			startEcho(t, lab)
			var local, ext []int
			for range sockets {
				c := listen(t, lab.Site("a").Host)
				local = append(local, int(addrPort(c.LocalAddr()).Port()))
				ext = append(ext, int(ask(t, c, echoEndpoint(0)).Port()))
			}
			switch tc.nat.Allocation {
			case natclass.Preserving:
				for i := range ext {
					if ext[i] != local[i] {
						t.Fatalf("preserving: local %v mapped to %v", local, ext)
					}
				}
			case natclass.Sequential:
				for i := 1; i < len(ext); i++ {
					if ext[i]-ext[i-1] != tc.step {
						t.Fatalf("sequential step %d: got ports %v", tc.step, ext)
					}
				}
			case natclass.Random:
				steps := map[int]bool{}
				for i := range ext {
					if ext[i] == local[i] || ext[i] < minNATPort || ext[i] > maxNATPort {
						t.Fatalf("random: local %v mapped to %v", local, ext)
					}
					if i > 0 {
						steps[ext[i]-ext[i-1]] = true
					}
				}
				if len(steps) < 2 {
					t.Fatalf("random allocation has a constant step: %v", ext)
				}
			}
		})
	}
}

// A preserving NAT whose preferred port is taken uses the next free one;
// a sequential NAT counts globally across the flows of one socket too.
func TestInProcessAllocationCollisions(t *testing.T) {
	apd := natclass.AddressAndPortDependent
	t.Run("preserving-next-free", func(t *testing.T) {
		lab := startLab(t, oneSite(NAT{Mapping: apd, Filtering: apd, Allocation: natclass.Preserving}))
		startEcho(t, lab)
		c := listen(t, lab.Site("a").Host)
		p := int(addrPort(c.LocalAddr()).Port())
		for i := range 3 {
			if got := int(ask(t, c, echoEndpoint(i)).Port()); got != p+i {
				t.Fatalf("flow %d got port %d, want %d", i, got, p+i)
			}
		}
	})
	t.Run("sequential-per-flow", func(t *testing.T) {
		lab := startLab(t, oneSite(NAT{Mapping: apd, Filtering: apd, Allocation: natclass.Sequential, Step: 3}))
		startEcho(t, lab)
		c := listen(t, lab.Site("a").Host)
		first := int(ask(t, c, echoEndpoint(0)).Port())
		for i := 1; i < 4; i++ {
			if got := int(ask(t, c, echoEndpoint(i)).Port()); got != first+3*i {
				t.Fatalf("flow %d got port %d, want %d", i, got, first+3*i)
			}
		}
	})
}

func TestInProcessHairpinning(t *testing.T) {
	cases := []string{"full-cone", "restricted-cone", "port-restricted-cone", "symmetric", "double-nat"}
	for _, name := range cases {
		t.Run(name, func(t *testing.T) {
			n := presetNAT(t, name)
			lab := startLab(t, oneSite(n))
			startEcho(t, lab)
			site := lab.Site("a")
			c1, c2 := listen(t, site.Host), listen(t, site.Host)
			m1 := ask(t, c1, echoEndpoint(0))
			m2 := ask(t, c2, echoEndpoint(0))
			if _, err := c2.WriteTo([]byte("hairpin"), net.UDPAddrFromAddrPort(m1)); err != nil {
				t.Fatal(err)
			}
			want := n.Expect().Hairpinning == natclass.Yes
			if !want {
				expectSilence(t, c1)
				var dropped uint64
				for _, v := range lab.NATs("a") {
					dropped += v.Stats.DropHairpin + v.Stats.DropFiltered
				}
				if dropped == 0 {
					t.Fatalf("hairpin not delivered but no drop counted: %+v", lab.NATs("a"))
				}
				return
			}
			_ = c1.SetReadDeadline(time.Now().Add(replyWait))
			buf := make([]byte, 100)
			nr, from, err := c1.ReadFrom(buf)
			if err != nil || string(buf[:nr]) != "hairpin" {
				t.Fatalf("hairpinned packet: %q, %v", buf[:nr], err)
			}
			// Source rewritten to the sender's mapping (the same one the
			// server saw, since these presets map endpoint-independently).
			if got := addrPort(from); got != m2 {
				t.Fatalf("hairpinned packet from %v, want the sender's mapping %v", got, m2)
			}
		})
	}
}

// Double NAT: the outer layer hairpins, the inner one does not filter.
func TestInProcessHairpinDoubleNAT(t *testing.T) {
	ei := natclass.EndpointIndependent
	n := NAT{Mapping: ei, Filtering: ei, Allocation: natclass.Preserving, Hairpinning: true,
		Inner: &NAT{Mapping: ei, Filtering: ei, Allocation: natclass.Preserving, Hairpinning: true}}
	lab := startLab(t, oneSite(n))
	startEcho(t, lab)
	site := lab.Site("a")
	c1, c2 := listen(t, site.Host), listen(t, site.Host)
	m1, m2 := ask(t, c1, echoEndpoint(0)), ask(t, c2, echoEndpoint(0))
	if _, err := c2.WriteTo([]byte("x"), net.UDPAddrFromAddrPort(m1)); err != nil {
		t.Fatal(err)
	}
	_ = c1.SetReadDeadline(time.Now().Add(replyWait))
	buf := make([]byte, 10)
	_, from, err := c1.ReadFrom(buf)
	if err != nil || addrPort(from) != m2 {
		t.Fatalf("hairpin through CGN: from %v err %v, want %v", from, err, m2)
	}
	if v := lab.NATs("a"); v[0].Name != "cgn" || v[0].Stats.Hairpinned != 1 {
		t.Fatalf("want the CGN to hairpin once: %+v", v)
	}
}

func TestInProcessMappingLifetime(t *testing.T) {
	// lifetime is short enough for a quick test and long enough that
	// scheduling noise under -race cannot expire a refreshed mapping.
	const lifetime = 200 * time.Millisecond
	const refreshEvery = lifetime / 8
	ei := natclass.EndpointIndependent
	lab := startLab(t, oneSite(NAT{Mapping: ei, Filtering: ei, Allocation: natclass.Sequential, MappingLifetime: lifetime}))
	startEcho(t, lab)
	c := listen(t, lab.Site("a").Host)
	probe, err := lab.Server.Net.ListenPacket("udp4", netip.AddrPortFrom(ServerAddrs[1], 5000).String())
	if err != nil {
		t.Fatal(err)
	}
	m1 := ask(t, c, echoEndpoint(0))
	inbound := func() bool {
		if _, err := probe.WriteTo([]byte("in"), net.UDPAddrFromAddrPort(m1)); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(silenceWait))
		buf := make([]byte, 10)
		_, _, err := c.ReadFrom(buf)
		return err == nil
	}
	if !inbound() {
		t.Fatal("fresh mapping refused inbound traffic")
	}
	// Outbound traffic keeps it alive well past one lifetime.
	for end := time.Now().Add(2 * lifetime); time.Now().Before(end); {
		if _, err := c.WriteTo([]byte("keepalive"), probe.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(refreshEvery)
		drain(probe)
	}
	if !inbound() {
		t.Fatal("refreshed mapping expired")
	}
	// Inbound traffic alone does not refresh it (RFC 4787 REQ-6).
	start := time.Now()
	for time.Since(start) < lifetime+refreshEvery {
		_, _ = probe.WriteTo([]byte("in"), net.UDPAddrFromAddrPort(m1))
		time.Sleep(refreshEvery)
	}
	drain(c)
	if inbound() {
		t.Fatalf("mapping survived a lifetime with inbound traffic only: %+v", lab.NATs("a"))
	}
	v := lab.NATs("a")[0]
	if len(v.Mappings) != 0 || v.Stats.Expired == 0 {
		t.Fatalf("want the mapping gone and counted as expired: %+v", v)
	}
	// A new mapping comes from the sequential allocator: the next port.
	if m2 := ask(t, c, echoEndpoint(0)); m2.Port() != m1.Port()+1 {
		t.Fatalf("after expiry mapped to %v, want port %d", m2, m1.Port()+1)
	}
}

// drain discards what is queued on c. A deadline already in the past
// would fail reads before looking at the queue, as with real sockets, so
// it allows a moment.
func drain(c net.PacketConn) {
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Millisecond))
	buf := make([]byte, 1500)
	for {
		if _, _, err := c.ReadFrom(buf); err != nil {
			break
		}
	}
	_ = c.SetReadDeadline(time.Time{})
}

func TestInProcessBlockUDP(t *testing.T) {
	lab := startLab(t, oneSite(presetNAT(t, "udp-blocked")))
	startEcho(t, lab)
	c := listen(t, lab.Site("a").Host)
	if _, err := tryAsk(c, echoEndpoint(0), silenceWait); !isTimeout(err) {
		t.Fatalf("want a timeout through a UDP-blocking router, got %v", err)
	}
	// Inbound is blocked too.
	probe := listenServer(t, lab)
	if _, err := probe.WriteTo([]byte("in"), net.UDPAddrFromAddrPort(netip.AddrPortFrom(lab.Site("a").Public, 4000))); err != nil {
		t.Fatal(err)
	}
	if v := lab.NATs("a")[0]; v.Stats.DropBlocked != 2 || v.Stats.Out != 0 {
		t.Fatalf("want two blocked packets and none out: %+v", v.Stats)
	}
}

func TestInProcessDoubleNAT(t *testing.T) {
	lab := startLab(t, oneSite(presetNAT(t, "double-nat")))
	startEcho(t, lab)
	site := lab.Site("a")
	c := listen(t, site.Host)
	m := ask(t, c, echoEndpoint(0))
	cgnRange := netip.MustParsePrefix("100.64.0.0/10")
	if !site.Host.Addr().IsPrivate() || m.Addr() != site.Public || site.Router.Addr() != site.Public {
		t.Fatalf("host %v mapped to %v, public %v router %v", site.Host.Addr(), m, site.Public, site.Router.Addrs)
	}
	v := lab.NATs("a")
	if len(v) != 2 || v[0].Name != "cgn" || v[1].Name != "home" || !cgnRange.Contains(v[1].WAN) {
		t.Fatalf("layers: %+v", v)
	}
	if len(v[0].Mappings) != 1 || !cgnRange.Contains(v[0].Mappings[0].Internal.Addr()) || v[0].Mappings[0].External != m {
		t.Fatalf("CGN mapping: %+v, mapped %v", v[0].Mappings, m)
	}
	if len(v[1].Mappings) != 1 || v[1].Mappings[0].Internal != addrPort(c.LocalAddr()) {
		t.Fatalf("home mapping: %+v, local %v", v[1].Mappings, c.LocalAddr())
	}
}

func TestInProcessOpen(t *testing.T) {
	lab := startLab(t, oneSite(presetNAT(t, "open")))
	startEcho(t, lab)
	site := lab.Site("a")
	if site.Host.Addr() != site.Public || site.Public != netip.MustParseAddr("198.51.100.10") {
		t.Fatalf("open host %v, public %v", site.Host.Addr(), site.Public)
	}
	if site.Router.Addr() != netip.MustParseAddr("198.51.100.100") {
		t.Fatalf("open site's firewall at %v", site.Router.Addrs)
	}
	c := listen(t, site.Host)
	if m := ask(t, c, echoEndpoint(2)); m != addrPort(c.LocalAddr()) {
		t.Fatalf("open host seen as %v, want %v", m, c.LocalAddr())
	}
	// Unsolicited inbound reaches any bound socket.
	probe := listenServer(t, lab)
	if _, err := probe.WriteTo([]byte("in"), c.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(replyWait))
	if _, _, err := c.ReadFrom(make([]byte, 10)); err != nil {
		t.Fatalf("unsolicited packet to open host: %v", err)
	}
}

// Sites reach each other through their public mappings: the basic UDP
// hole punch between two port-restricted cones.
func TestInProcessSiteToSite(t *testing.T) {
	topo, err := PairTopology("port-restricted-cone", "port-restricted-cone")
	if err != nil {
		t.Fatal(err)
	}
	lab := startLab(t, topo)
	startEcho(t, lab)
	a, b := listen(t, lab.Site("a").Host), listen(t, lab.Site("b").Host)
	ma, mb := ask(t, a, echoEndpoint(0)), ask(t, b, echoEndpoint(0))
	// a's first packet opens a's filter toward b and is dropped at b's NAT.
	_, _ = a.WriteTo([]byte("punch"), net.UDPAddrFromAddrPort(mb))
	expectSilence(t, b)
	_, _ = b.WriteTo([]byte("punch"), net.UDPAddrFromAddrPort(ma))
	_ = a.SetReadDeadline(time.Now().Add(replyWait))
	buf := make([]byte, 10)
	if _, from, err := a.ReadFrom(buf); err != nil || addrPort(from) != mb {
		t.Fatalf("punched packet: from %v, %v; want from %v", from, err, mb)
	}
}
