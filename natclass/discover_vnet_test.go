package natclass_test

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pion/transport/v4/vnet"

	"github.com/natlab/natlab/internal/vnetlab"
	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/server"
)

// startVnet runs a lab with the server listening on both public IPs.
func startVnet(t *testing.T, mapping, filtering natclass.Behavior, lifetime time.Duration, full bool) (*vnetlab.Lab, string) {
	t.Helper()
	lab, err := vnetlab.Start(vnetlab.Config{Mapping: mapping, Filtering: filtering, Lifetime: lifetime})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lab.Close() })
	addrs := server.Addrs{Primary: netip.AddrPortFrom(vnetlab.ServerIP1, 3478)}
	if full {
		addrs.AltIP, addrs.AltPort = vnetlab.ServerIP2, 3479
	}
	srv, err := server.Listen(lab.Server, server.Config{Addrs: addrs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	if srv.TCPError() == nil {
		t.Error("vnet has no TCP, yet the server says it serves TCP")
	}
	return lab, addrs.Primary.String()
}

func TestDiscoverVnetMatrix(t *testing.T) {
	bs := []natclass.Behavior{natclass.EndpointIndependent, natclass.AddressDependent, natclass.AddressAndPortDependent}
	for _, m := range bs {
		for _, f := range bs {
			t.Run(string(m)+"/"+string(f), func(t *testing.T) {
				t.Parallel()
				lab, srv := startVnet(t, m, f, 0, true)
				start := time.Now()
				p, err := natclass.Discover(context.Background(), natclass.Options{Net: lab.Client, Servers: []string{srv}})
				if err != nil {
					t.Fatal(err)
				}
				if p.Mapping != m || p.Filtering != f {
					t.Errorf("got mapping %q filtering %q, want %q %q (profile %+v)", p.Mapping, p.Filtering, m, f, p)
				}
				if want := natclass.ClassicName(true, m, f); p.NATType != want {
					t.Errorf("nat_type %q, want %q", p.NATType, want)
				}
				if !netip.MustParseAddrPort(p.MappedAddress).Addr().IsValid() || netip.MustParseAddrPort(p.MappedAddress).Addr() != vnetlab.NATIP {
					t.Errorf("mapped address %s, want the NAT's %s", p.MappedAddress, vnetlab.NATIP)
				}
				// vnet's NAT allocates ports one after the other.
				if p.PortAllocation == nil || p.PortAllocation.Pattern != natclass.Sequential || p.PortAllocation.Step != 1 {
					t.Errorf("port allocation %+v, want sequential step 1", p.PortAllocation)
				}
				// vnet has no hairpin inside the NAT, but a packet to the
				// NAT's public address goes out to the WAN router and back
				// in, where only endpoint-independent filtering admits it.
				if want := natclass.TriOf(f == natclass.EndpointIndependent); p.Hairpinning != want {
					t.Errorf("hairpinning %v, want %v", p.Hairpinning, want)
				}
				// vnet sockets are not kernel sockets: no ICMP errors, no trace.
				if len(p.NotRun) != 1 || p.NotRun[0].Test != natclass.TestNATDepth {
					t.Errorf("not_run %+v, want every test but nat_depth run", p.NotRun)
				}
				if d := time.Since(start); d > 2*time.Second {
					t.Errorf("check took %v", d)
				}
			})
		}
	}
}

func TestDiscoverVnetCases(t *testing.T) {
	eim, apd := natclass.EndpointIndependent, natclass.AddressAndPortDependent
	tests := []struct {
		name               string
		mapping, filtering natclass.Behavior
		full               bool
		want               natclass.NATType
		wantMapping        natclass.Behavior
		wantFiltering      natclass.Behavior
		wantNotRun         []string
	}{
		{"no NAT", "", "", true, natclass.Open, eim, eim, []string{natclass.TestHairpinning, natclass.TestNATDepth}},
		// A plain STUN server cannot show filtering; the profile must say
		// so and not guess.
		{"plain STUN behind NAT", eim, apd, false, natclass.Unknown, "", "", []string{natclass.TestMapping, natclass.TestFiltering, natclass.TestNATDepth}},
		{"plain STUN without NAT", "", "", false, natclass.Unknown, eim, "", []string{natclass.TestFiltering, natclass.TestHairpinning, natclass.TestNATDepth}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			lab, srv := startVnet(t, tt.mapping, tt.filtering, 0, tt.full)
			p, err := natclass.Discover(context.Background(), natclass.Options{Net: lab.Client, Servers: []string{srv}})
			if err != nil {
				t.Fatal(err)
			}
			if p.NATType != tt.want || p.Mapping != tt.wantMapping || p.Filtering != tt.wantFiltering {
				t.Errorf("got %s/%q/%q, want %s/%q/%q", p.NATType, p.Mapping, p.Filtering, tt.want, tt.wantMapping, tt.wantFiltering)
			}
			var got []string
			for _, n := range p.NotRun {
				got = append(got, n.Test)
			}
			if !slices.Equal(got, tt.wantNotRun) {
				t.Errorf("not_run %+v, want tests %v", p.NotRun, tt.wantNotRun)
			}
			if tt.mapping == "" && p.MappedAddress != p.LocalAddress {
				t.Errorf("no NAT, but mapped %s != local %s", p.MappedAddress, p.LocalAddress)
			}
		})
	}
}

// TestDiscoverVnetServers checks that plain STUN servers on other
// addresses still reveal a symmetric NAT, and that an unreachable extra
// server does not hold the check up.
func TestDiscoverVnetServers(t *testing.T) {
	for _, tt := range []struct {
		mapping natclass.Behavior
		want    natclass.NATType
		wantMap natclass.Behavior
	}{
		{natclass.AddressAndPortDependent, natclass.Symmetric, natclass.AddressAndPortDependent},
		{natclass.AddressDependent, natclass.Symmetric, natclass.AddressDependent},
		{natclass.EndpointIndependent, natclass.Unknown, natclass.EndpointIndependent},
	} {
		t.Run(string(tt.mapping), func(t *testing.T) {
			t.Parallel()
			extra := netip.MustParseAddr("203.0.113.20")
			lab, err := vnetlab.Start(vnetlab.Config{Mapping: tt.mapping, Filtering: natclass.AddressAndPortDependent, ExtraHosts: []netip.Addr{extra}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = lab.Close() })
			var servers []string
			for _, s := range []struct {
				n    *vnet.Net
				addr netip.AddrPort
			}{
				{lab.Server, netip.AddrPortFrom(vnetlab.ServerIP1, 3478)},
				{lab.Server, netip.AddrPortFrom(vnetlab.ServerIP1, 3479)},
				{lab.Extra[0], netip.AddrPortFrom(extra, 3478)},
			} {
				srv, err := server.Listen(s.n, server.Config{Addrs: server.Addrs{Primary: s.addr}})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = srv.Close() })
				servers = append(servers, s.addr.String())
			}
			servers = append(servers, "203.0.113.99:3478") // nobody there
			start := time.Now()
			p, err := natclass.Discover(context.Background(), natclass.Options{Net: lab.Client, Servers: servers})
			if err != nil {
				t.Fatal(err)
			}
			if p.NATType != tt.want || p.Mapping != tt.wantMap {
				t.Errorf("got %s/%q, want %s/%q (not_run %+v)", p.NATType, p.Mapping, tt.want, tt.wantMap, p.NotRun)
			}
			if p.Server != servers[0] || len(p.Servers) != 4 || p.Servers[3].Error == "" {
				t.Errorf("servers %+v", p.Servers)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("took %v: a silent extra server held the check up", d)
			}
		})
	}
}

func TestDiscoverVnetUDPBlocked(t *testing.T) {
	lab, _ := startVnet(t, natclass.EndpointIndependent, natclass.EndpointIndependent, 0, true)
	start := time.Now()
	p, err := natclass.Discover(context.Background(), natclass.Options{Net: lab.Client, Servers: []string{"203.0.113.99:3478"}})
	if err != nil {
		t.Fatal(err)
	}
	if p.NATType != natclass.UDPBlocked || len(p.NotRun) == 0 {
		t.Errorf("profile %+v, want udp-blocked", p)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("took %v to give up", d)
	}
	// A --timeout shorter than the UDP-blocked wait ends the check sooner,
	// with the same verdict.
	start = time.Now()
	p, err = natclass.Discover(context.Background(), natclass.Options{Net: lab.Client, Servers: []string{"203.0.113.99:3478"}, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if p.NATType != natclass.UDPBlocked || !strings.Contains(p.Servers[0].Error, "timeout") {
		t.Errorf("short timeout: %s, servers %+v", p.NATType, p.Servers)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("short timeout: took %v", d)
	}
	// Cancelling is not a verdict.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if p, err := natclass.Discover(ctx, natclass.Options{Net: lab.Client, Servers: []string{"203.0.113.99:3478"}}); err == nil {
		t.Errorf("cancelled check returned %+v", p)
	}
}

func TestDiscoverVnetLifetime(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for mappings to expire")
	}
	const lifetime = 1200 * time.Millisecond
	lab, srv := startVnet(t, natclass.EndpointIndependent, natclass.AddressAndPortDependent, lifetime, true)
	p, err := natclass.Discover(context.Background(), natclass.Options{
		Net: lab.Client, Servers: []string{srv}, Lifetime: true,
		LifetimeMax: 2 * time.Second, LifetimeResolution: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if p.BindingLifetimeS == nil {
		t.Fatalf("no lifetime measured: %+v", p.NotRun)
	}
	if got := *p.BindingLifetimeS; got < 0.9 || got > lifetime.Seconds() {
		t.Errorf("lifetime %.2f s, want within 0.3 s below %.1f s", got, lifetime.Seconds())
	}
}

// TestDiscoverVnetDeadAlternate runs against a server that advertises
// OTHER-ADDRESS but whose alternate sockets never answer: the profile must
// not mistake that silence for filtering.
func TestDiscoverVnetDeadAlternate(t *testing.T) {
	lab, err := vnetlab.Start(vnetlab.Config{Mapping: natclass.EndpointIndependent, Filtering: natclass.EndpointIndependent})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lab.Close() })
	addrs := server.Addrs{Primary: netip.AddrPortFrom(vnetlab.ServerIP1, 3478), AltIP: vnetlab.ServerIP2, AltPort: 3479}
	c, err := lab.Server.ListenPacket("udp4", addrs.Primary.String())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		h := server.NewHandler(addrs, "broken")
		buf := make([]byte, 1500)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			ap := from.(*net.UDPAddr).AddrPort()
			if rep := h.Handle(buf[:n], ap, addrs.Primary); rep.Raw != nil && rep.From == addrs.Primary {
				_, _ = c.WriteTo(rep.Raw, net.UDPAddrFromAddrPort(rep.To))
			}
		}
	}()
	t.Cleanup(func() { _ = c.Close(); <-done })
	p, err := natclass.Discover(context.Background(), natclass.Options{Net: lab.Client, Servers: []string{addrs.Primary.String()}})
	if err != nil {
		t.Fatal(err)
	}
	if p.Filtering != "" || p.Mapping != "" || p.NATType != natclass.Unknown {
		t.Errorf("guessed %s/%q/%q from silence", p.NATType, p.Mapping, p.Filtering)
	}
	var got []string
	for _, n := range p.NotRun {
		got = append(got, n.Test)
	}
	if !slices.Contains(got, natclass.TestMapping) || !slices.Contains(got, natclass.TestFiltering) {
		t.Errorf("not_run %+v, want mapping and filtering", p.NotRun)
	}
}
