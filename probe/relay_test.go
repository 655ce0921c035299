package probe_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/natlab/natlab/holepunch"
	"github.com/natlab/natlab/lab"
	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/probe"
	"github.com/natlab/natlab/relay"
	"github.com/natlab/natlab/server"
	"github.com/natlab/natlab/testnet"
)

// relayLabBound bounds one relay lab test: allocation and measurement
// take about a second; the kernel lab adds namespace set-up.
const relayLabBound = 60 * time.Second

// startRelayLab builds a pair lab with natlab's STUN+TURN server on it.
func startRelayLab(t *testing.T, ctx context.Context, backend testnet.Backend, natA, natB string) (*testnet.Lab, *server.Server) {
	t.Helper()
	if backend == testnet.Kernel {
		if _, err := os.Stat("/proc/self/ns/net"); err != nil {
			t.Skipf("kernel lab: no network namespaces: %v", err)
		}
	}
	topo, err := testnet.PairTopology(natA, natB)
	if err != nil {
		t.Fatal(err)
	}
	tl, err := testnet.Start(ctx, topo, backend)
	if errors.Is(err, testnet.ErrNeedPrivileges) {
		t.Skipf("kernel lab: %v", err)
	}
	if err != nil {
		t.Fatalf("start %s lab: %v", backend, err)
	}
	t.Cleanup(func() {
		if err := tl.Close(); err != nil {
			t.Errorf("close lab: %v", err)
		}
	})
	srv, err := server.Listen(tl.Server.Net, server.Config{
		Addrs: server.Addrs{
			Primary: netip.AddrPortFrom(tl.Server.Addrs[0], lab.STUNPort),
			AltIP:   tl.Server.Addrs[1], AltPort: lab.STUNAltPort,
		},
		TURN: lab.TURNConfig(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return tl, srv
}

// runRelayPair runs the relay stage on both sites the way the agent does:
// prepare, exchange offers at a barrier, measure at once.
func runRelayPair(t *testing.T, ctx context.Context, tl *testnet.Lab, cfg probe.RelayConfig) [2]probe.RelayReport {
	t.Helper()
	sess, err := holepunch.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	tag := probe.RelayTag(sess)
	var (
		sides   [2]*probe.RelaySide
		offers  [2]probe.RelayOffer
		reports [2]probe.RelayReport
		wg      sync.WaitGroup
	)
	for i, name := range []string{"a", "b"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sides[i] = probe.PrepareRelay(ctx, tl.Site(name).Host.Net, cfg, nil, "")
			offers[i] = sides[i].Offer()
		}()
	}
	wg.Wait() // the relay step's barrier
	for i := range sides {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer sides[i].Close()
			sides[i].MeasureRelay(ctx, offers[1-i], tag)
			reports[i] = sides[i].Report()
		}()
	}
	wg.Wait()
	return reports
}

func checkRelayed(t *testing.T, reps [2]probe.RelayReport, want natclass.Technique, wantTransport relay.Transport) {
	t.Helper()
	for i, r := range reps {
		t.Logf("side %d: %s; attempts %+v; figures %+v", i, r.Technique, r.Attempts, r.Relay)
		t.Logf("side %d verdict: %s", i, probe.RelaySummary(false, r))
		if r.Technique != want || r.Transport != wantTransport || r.Relay == nil {
			t.Fatalf("side %d: %+v, want %s over %s", i, r, want, wantTransport)
		}
		f := r.Relay
		if f.Echoes < relay.DefaultEchoes || f.RTTMedianMillis <= 0 || f.RTTP95Millis < f.RTTMedianMillis || f.ThroughputMbps <= 0 || !f.PeerReported {
			t.Errorf("side %d figures %+v", i, f)
		}
	}
}

func TestRelaySymmetricInProcess(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), relayLabBound)
	defer cancel()
	tl, srv := startRelayLab(t, ctx, testnet.InProcess, "symmetric", "symmetric")
	reps := runRelayPair(t, ctx, tl, probe.RelayConfig{
		Server: srv.Addrs().Primary.String(), Username: lab.TURNUser, Password: lab.TURNPass,
		Measure: relay.MeasureOptions{BurstBytes: 1 << 20},
	})
	checkRelayed(t, reps, natclass.RelayUDP, relay.UDP)
	// In-process there is no TCP: only UDP was tried and needed.
	if st, _ := srv.TURNStats(); st.AllocationsTotal != 2 {
		t.Errorf("server stats %+v", st)
	}
}

func TestRelaySymmetricKernel(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), relayLabBound)
	defer cancel()
	tl, srv := startRelayLab(t, ctx, testnet.Kernel, "symmetric", "symmetric")
	reps := runRelayPair(t, ctx, tl, probe.RelayConfig{
		Server: srv.Addrs().Primary.String(), Username: lab.TURNUser, Password: lab.TURNPass,
		Measure: relay.MeasureOptions{BurstBytes: 1 << 20},
	})
	checkRelayed(t, reps, natclass.RelayUDP, relay.UDP)
}

// Behind udp-blocked (UDP dropped, TCP through NAT), TURN over TCP still
// relays; the UDP attempt fails within its bound first.
func TestRelayUDPBlockedKernel(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), relayLabBound)
	defer cancel()
	tl, srv := startRelayLab(t, ctx, testnet.Kernel, "udp-blocked", "udp-blocked")
	reps := runRelayPair(t, ctx, tl, probe.RelayConfig{
		Server: srv.Addrs().Primary.String(), Username: lab.TURNUser, Password: lab.TURNPass,
		Measure: relay.MeasureOptions{BurstBytes: 1 << 20},
	})
	checkRelayed(t, reps, natclass.RelayTCP, relay.TCP)
	for i, r := range reps {
		if len(r.Attempts) != 2 || r.Attempts[0].Transport != relay.UDP || r.Attempts[0].Error == "" {
			t.Errorf("side %d attempts %+v, want a failed UDP attempt first", i, r.Attempts)
		}
	}
}

// The relay's cost against the direct path: a full-cone pair punches a
// direct UDP path, then both sides measure it and the relay with the same
// code, and the report states what going direct saves.
func TestRelayCostInProcess(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), relayLabBound)
	defer cancel()
	tl, srv := startRelayLab(t, ctx, testnet.InProcess, "full-cone", "port-restricted-cone")
	sess, err := holepunch.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	sessions := [2]holepunch.Session{sess, sess.Peer()}
	var (
		conns   [2]net.PacketConn
		srflx   [2]netip.AddrPort
		paths   [2]*holepunch.Path
		sides   [2]*probe.RelaySide
		offers  [2]probe.RelayOffer
		reports [2]probe.RelayReport
		wg      sync.WaitGroup
	)
	for i, name := range []string{"a", "b"} {
		c, err := tl.Site(name).Host.Net.ListenPacket("udp4", "0.0.0.0:0")
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c
		if srflx[i], err = holepunch.Reflexive(ctx, c, srv.Addrs().Primary); err != nil {
			t.Fatal(err)
		}
	}
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, _, err := holepunch.PunchUDP(ctx, holepunch.Config{Conn: conns[i], Session: sessions[i],
				Remote: []holepunch.Candidate{{Kind: holepunch.Srflx, Addr: srflx[1-i]}}})
			if err != nil {
				t.Errorf("punch %d: %v", i, err)
				return
			}
			paths[i] = p
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	cfg := probe.RelayConfig{Server: srv.Addrs().Primary.String(), Username: lab.TURNUser, Password: lab.TURNPass,
		Measure: relay.MeasureOptions{BurstBytes: 1 << 20}}
	for i, name := range []string{"a", "b"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sides[i] = probe.PrepareRelay(ctx, tl.Site(name).Host.Net, cfg, paths[i], natclass.DirectUDP)
			offers[i] = sides[i].Offer()
		}()
	}
	wg.Wait() // the relay step
	for i := range sides {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sides[i].MeasureDirect(ctx, offers[1-i], probe.RelayTag(sess))
		}()
	}
	wg.Wait() // the barrier between the two measurements
	for i := range sides {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer sides[i].Close()
			sides[i].MeasureRelay(ctx, offers[1-i], probe.RelayTag(sess))
			reports[i] = sides[i].Report()
		}()
	}
	wg.Wait()
	for i, r := range reports {
		if r.Direct == nil || r.Relay == nil || r.Cost == nil || r.DirectTechnique != natclass.DirectUDP {
			t.Fatalf("side %d: %+v", i, r)
		}
		t.Logf("side %d: %s", i, probe.RelaySummary(true, r))
		if r.Direct.Echoes < relay.DefaultEchoes || r.Direct.ThroughputMbps <= 0 {
			t.Errorf("side %d direct figures %+v", i, r.Direct)
		}
	}
}
