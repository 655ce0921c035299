package lab_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/natlab/natlab/internal/labtest"
	"github.com/natlab/natlab/lab"
	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/probe"
	"github.com/natlab/natlab/relay"
	"github.com/natlab/natlab/server"
	"github.com/natlab/natlab/testnet"
)

// TestProbeRelayIPv6: two hosts behind symmetric IPv4 NATs and IPv6
// firewalls (one translating, NAT66) probe with the relay stage. Besides
// the IPv4 relay, each allocates on the lab's IPv6 TURN server, gets an
// IPv6 relayed address on it and measures relay-to-relay with the peer:
// the IPv6 relay row, last of the IPv6 rows, is predicted and measured
// success, and the report's ipv6.relay carries its figures, with the
// IPv6 direct path's beside them.
func TestProbeRelayIPv6(t *testing.T) {
	tl, srv6, reps := probeRelayPair(t, [2]string{"ipv6-firewall", "nat66"})
	for i, r := range reps {
		if r.Relay == nil || r.Relay.Technique != natclass.RelayUDP {
			t.Errorf("side %d: IPv4 relay %+v", i, r.Relay)
		}
		if r.IPv6 == nil || r.IPv6.Relay == nil || len(r.IPv6.Techniques) == 0 {
			t.Fatalf("side %d: IPv6 result %+v", i, r.IPv6)
		}
		rr := r.IPv6.Relay
		t.Logf("side %d: IPv6 relay %s ↔ %s over %s: %+v", i, rr.Relayed, rr.PeerRelayed, rr.Transport, rr.Relay)
		for _, a := range []string{rr.Relayed, rr.PeerRelayed} {
			if ap, err := netip.ParseAddrPort(a); err != nil || ap.Addr() != tl.Server.Addrs6[0] {
				t.Errorf("side %d: relayed address %q, want one on %v", i, a, tl.Server.Addrs6[0])
			}
		}
		if rr.Technique != natclass.RelayUDP || rr.Transport != relay.UDP || rr.Relay == nil ||
			rr.Relay.Echoes == 0 || rr.Relay.RTTMedianMillis <= 0 || rr.Relay.ThroughputMbps <= 0 || !rr.Relay.PeerReported {
			t.Errorf("side %d: IPv6 relay %+v", i, rr)
		}
		row := r.IPv6.Techniques[len(r.IPv6.Techniques)-1]
		if row.Technique != natclass.RelayUDP || row.Predicted != natclass.Success || row.Measured != natclass.Success || row.Remote != rr.PeerRelayed {
			t.Errorf("side %d: IPv6 relay row %+v", i, row)
		}
		// The IPv6 punch worked: its path was kept and measured against
		// the IPv6 relay, and the verdict says what the relay would cost.
		if r.IPv6.Measured == natclass.Success && (rr.Direct == nil || rr.DirectTechnique != r.IPv6.Technique || rr.Cost == nil ||
			!strings.Contains(r.Verdict.Summary, "; over IPv6 "+rr.Cost.Summary)) {
			t.Errorf("side %d: IPv6 direct %+v (%s), cost %+v, verdict %q", i, rr.Direct, rr.DirectTechnique, rr.Cost, r.Verdict.Summary)
		}
	}
	if st, _ := srv6.TURNStats(); st.AllocationsTotal != 2 {
		t.Errorf("IPv6 server: %d allocations, want 2", st.AllocationsTotal)
	}
}

// probeRelayPair runs a probe with the relay stage on both sites of a
// kernel lab whose hosts are behind symmetric IPv4 NATs and the given
// IPv6 presets ("" leaves a site IPv4-only).
func probeRelayPair(t *testing.T, six [2]string) (*testnet.Lab, *server.Server, [2]*probe.Report) {
	t.Helper()
	return probeDualStack(t, presets6(t, six), true)
}

// presets6 are the named IPv6 behaviours (nil for "").
func presets6(t *testing.T, six [2]string) [2]*testnet.NAT6 {
	t.Helper()
	var specs [2]*testnet.NAT6
	for i, name := range six {
		if name != "" {
			n6, err := testnet.Preset6(name)
			if err != nil {
				t.Fatal(err)
			}
			specs[i] = &n6
		}
	}
	return specs
}

// probeDualStack runs a probe on both sites of a kernel lab whose hosts
// are behind symmetric IPv4 NATs and the given IPv6 behaviours (nil: IPv4
// only), with the lab's IPv4 and IPv6 servers (STUN, rendezvous, TURN)
// running; relay adds the relay stage (the lab's TURN credentials, over
// IPv6 too).
func probeDualStack(t *testing.T, six [2]*testnet.NAT6, relay bool) (*testnet.Lab, *server.Server, [2]*probe.Report) {
	t.Helper()
	sym, err := testnet.Preset("symmetric")
	if err != nil {
		t.Fatal(err)
	}
	var topo testnet.Topology
	for i, n6 := range six {
		topo.Sites = append(topo.Sites, testnet.SiteSpec{Name: string(rune('a' + i)), Preset: "symmetric", NAT: sym, IPv6: n6})
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tl := labtest.Kernel(t, ctx, topo)
	srvs := labtest.Servers(t, tl)
	reps := labtest.Pair(t, ctx, [2]*testnet.Host{tl.Sites[0].Host, tl.Sites[1].Host}, func(int) probe.Options {
		o := probe.Options{NoPortMap: true, Server: labtest.Server(tl), Server6: lab.Server6(srvs)}
		if relay {
			o.Relay, o.Relay6 = lab.RelayConfig(tl), lab.RelayConfig6(tl)
		}
		return o
	})
	for i, r := range reps {
		t.Logf("side %d verdict: %s", i, r.Verdict.Summary)
		if r.Verdict.Summary == "" || strings.Contains(r.Verdict.Summary, "error") {
			t.Errorf("side %d: verdict %+v", i, r.Verdict)
		}
	}
	return tl, srvs.Servers[1], reps
}

// TestProbeRelayIPv6Skipped: a dual-stack host probes an IPv4-only peer
// (both given the IPv6 server). The peer has no IPv6 profile, so neither
// side runs the IPv6 plan nor, with it, the IPv6 relay: no IPv6 row is
// reported, the IPv6 server allocates nothing, and the verdict is the
// IPv4 relay's alone.
func TestProbeRelayIPv6Skipped(t *testing.T) {
	_, srv6, reps := probeRelayPair(t, [2]string{"ipv6-firewall", ""})
	for i, r := range reps {
		if r.IPv6 != nil {
			t.Errorf("side %d: IPv6 result %+v without the peer's IPv6", i, r.IPv6)
		}
		if r.Relay == nil || r.Relay.Technique != natclass.RelayUDP || r.Verdict.Technique != natclass.RelayUDP || r.Verdict.Family != "" {
			t.Errorf("side %d: relay %+v, verdict %+v", i, r.Relay, r.Verdict)
		}
	}
	if st, _ := srv6.TURNStats(); st.AllocationsTotal != 0 {
		t.Errorf("IPv6 server: %d allocations, want none", st.AllocationsTotal)
	}
}

// TestProbeRelayIPv6TCP: one site's IPv6 firewall drops all UDP (TCP
// passes). Its IPv6 profile is UDP-blocked with a TCP profile that
// reached the server, so the IPv6 relay row is predicted relay-tcp; that
// side allocates on the IPv6 relay over TCP (no UDP attempt), the other
// over UDP, and the relay works between their IPv6 relayed addresses.
func TestProbeRelayIPv6TCP(t *testing.T) {
	_, _, reps := probeDualStack(t, [2]*testnet.NAT6{
		{Translation: natclass.TranslationNone, Firewall: true}, {Translation: natclass.TranslationNone, Firewall: true, BlockUDP: true}}, true)
	for i, r := range reps {
		if r.IPv6 == nil || r.IPv6.Relay == nil || len(r.IPv6.Techniques) == 0 {
			t.Fatalf("side %d: IPv6 result %+v", i, r.IPv6)
		}
		rr := r.IPv6.Relay
		t.Logf("side %d: IPv6 relay %s ↔ %s over %s/%s, attempts %+v: %+v", i, rr.Relayed, rr.PeerRelayed, rr.Transport, rr.PeerTransport, rr.Attempts, rr.Relay)
		wantTr := []relay.Transport{relay.UDP, relay.TCP}[i]
		if rr.Technique != natclass.RelayTCP || rr.Transport != wantTr || rr.Attempts[0].Transport != wantTr || rr.Relay == nil || rr.Relay.Echoes == 0 {
			t.Errorf("side %d: IPv6 relay %+v", i, rr)
		}
		row := r.IPv6.Techniques[len(r.IPv6.Techniques)-1]
		if row.Technique != natclass.RelayTCP || row.Predicted != natclass.Success || row.Measured != natclass.Success {
			t.Errorf("side %d: IPv6 relay row %+v", i, row)
		}
		// Without a direct path in either family, the verdict is the IPv6
		// relay (IPv4's works too: IPv6 is preferred).
		v := r.Verdict
		if !v.Direct && (v.Family != "ipv6" || v.Technique != natclass.RelayTCP || !strings.HasPrefix(v.Summary, "Relay required (no direct path over IPv4 or IPv6): use IPv6")) {
			t.Errorf("side %d: verdict %+v", i, v)
		}
	}
}

// TestProbeRelayNoDirectPath: symmetric IPv4 NATs and, over IPv6, two
// NAT66 routers that pick a random port per flow: no direct technique
// works in either family (each predicted to fail, as measured). Both
// relays work, and the verdict names the one to use and its family:
// IPv6, preferred as for direct paths, with IPv4's relay after it.
func TestProbeRelayNoDirectPath(t *testing.T) {
	_, _, reps := probeRelayPair(t, [2]string{"nat66-random", "nat66-random"})
	for i, r := range reps {
		if r.IPv6 == nil || r.IPv6.Relay == nil || r.Relay == nil {
			t.Fatalf("side %d: IPv6 %+v, relay %+v", i, r.IPv6, r.Relay)
		}
		for _, tr := range append(append([]probe.TechniqueResult{}, r.Techniques...), r.IPv6.Techniques...) {
			if tr.Measured != tr.Predicted || (tr.Measured == natclass.Success) != tr.Technique.IsRelay() {
				t.Errorf("side %d: %s predicted %s, measured %s (%s)", i, tr.Technique, tr.Predicted, tr.Measured, tr.Error)
			}
		}
		v := r.Verdict
		if v.Direct || v.Family != "ipv6" || v.Technique != natclass.RelayUDP ||
			!strings.HasPrefix(v.Summary, "Relay required (no direct path over IPv4 or IPv6): use IPv6 (preferred, RFC 8305): Relay over UDP (TURN)") ||
			!strings.Contains(v.Summary, "; IPv4: Relay over UDP (TURN)") {
			t.Errorf("side %d: verdict %+v", i, v)
		}
	}
}
