package lab_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/natlab/natlab/lab"
	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/probe"
	"github.com/natlab/natlab/testnet"
)

// labBound bounds one lab run in tests: a profile takes well under a second
// in-process; the kernel lab adds namespace set-up.
const labBound = 30 * time.Second

// TestLabProfilesMatchPresets is issue #3's core promise: for every preset,
// on every backend this machine can run, natlab's profile of the host
// equals the preset (mapping, filtering, nat_type, port allocation,
// hairpinning), and on the kernel backend so does its TCP profile.
func TestLabProfilesMatchPresets(t *testing.T) {
	for _, backend := range []testnet.Backend{testnet.InProcess, testnet.Kernel} {
		t.Run(string(backend), func(t *testing.T) {
			for _, preset := range testnet.Presets() {
				t.Run(preset, func(t *testing.T) {
					ctx, cancel := context.WithTimeout(context.Background(), labBound)
					defer cancel()
					rep, err := lab.Run(ctx, lab.Options{Backend: backend, NATA: preset})
					if errors.Is(err, testnet.ErrNeedPrivileges) {
						t.Skipf("kernel lab: %v", err)
					}
					if err != nil {
						t.Fatalf("lab.Run: %v", err)
					}
					if len(rep.Sites) != 1 {
						t.Fatalf("got %d sites, want 1", len(rep.Sites))
					}
					s := rep.Sites[0]
					if s.Error != "" {
						t.Fatalf("site a: %s", s.Error)
					}
					for _, m := range s.Mismatches {
						t.Errorf("%s on %s: %s", preset, backend, m)
					}
					if !rep.Match && len(s.Mismatches) == 0 {
						t.Errorf("report says mismatch without naming one")
					}
				})
			}
		})
	}
}

// TestCompareTCP: a TCP profile that differs from the preset's TCP, or was
// not measured, is a mismatch in words.
func TestCompareTCP(t *testing.T) {
	n, err := testnet.Preset("fullcone-udp")
	if err != nil {
		t.Fatal(err)
	}
	e := n.ExpectTCP()
	prof := func(m, f natclass.Behavior, a natclass.Allocation) *natclass.TCPProfile {
		return &natclass.TCPProfile{Reached: natclass.Yes, Mapping: m, Filtering: f, PortAllocation: &natclass.PortAllocation{Pattern: a}}
	}
	for _, tc := range []struct {
		name string
		p    *natclass.TCPProfile
		want int
	}{
		{"as preset", prof(natclass.EndpointIndependent, natclass.AddressAndPortDependent, natclass.Preserving), 0},
		{"UDP's filtering", prof(natclass.EndpointIndependent, natclass.EndpointIndependent, natclass.Preserving), 1},
		{"undetermined", prof("", "", natclass.Random), 3},
		{"not measured", &natclass.TCPProfile{}, 1},
		{"absent", nil, 1},
	} {
		if got := lab.CompareTCP(e, tc.p); len(got) != tc.want {
			t.Errorf("%s: %q, want %d mismatches", tc.name, got, tc.want)
		}
	}
}

// TestLabPairReport checks the two-site default run a newcomer sees.
func TestLabPairReport(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), labBound)
	defer cancel()
	rep, err := lab.Run(ctx, lab.Options{NATA: "full-cone", NATB: "symmetric-sequential"})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Schema != lab.Schema || rep.Backend != string(testnet.InProcess) || !rep.Match {
		t.Fatalf("report %+v", rep)
	}
	if len(rep.Server) != 4 {
		t.Errorf("server sockets %v, want 4 (two IPs x two ports)", rep.Server)
	}
	if a, b := rep.Sites[0].Profile, rep.Sites[1].Profile; a.MappedAddress == b.MappedAddress {
		t.Errorf("two sites share a mapped address %s", a.MappedAddress)
	}
	if pa := rep.Sites[1].Profile.PortAllocation; pa == nil || pa.Step != 1 {
		t.Errorf("symmetric-sequential: port allocation %+v, want step 1", pa)
	}
}

func TestLabBadInput(t *testing.T) {
	ctx := context.Background()
	if _, err := lab.Run(ctx, lab.Options{NATA: "carrier-pigeon"}); err == nil {
		t.Error("unknown preset: no error")
	}
	if _, err := lab.Run(ctx, lab.Options{Backend: "vmware", NATA: "open"}); err == nil {
		t.Error("unknown backend: no error")
	}
	if _, err := lab.Run(ctx, lab.Options{}); err == nil {
		t.Error("no sites: no error")
	}
}

func TestMain(m *testing.M) { os.Exit(m.Run()) }

// TestLabEvents: the progress hook gets the plan before anything is
// measured, then each site with its profile.
func TestLabEvents(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), labBound)
	defer cancel()
	var evs []probe.Event
	rep, err := lab.Run(ctx, lab.Options{NATA: "full-cone", NATB: "symmetric", Events: func(e probe.Event) { evs = append(evs, e) }})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 4 {
		t.Fatalf("%d events, want plan + 2 sites + the pair: %+v", len(evs), evs)
	}
	// Last, the two sites probed together: their matrix cell.
	mp, ok := evs[3].Data.(*lab.MatrixPair)
	if evs[3].Stage != probe.StagePair || !ok || mp != rep.Pair || mp.A != "full-cone" || mp.B != "symmetric" ||
		!mp.Verdict.Direct || len(mp.Techniques) == 0 || len(mp.Mismatches) > 0 {
		t.Fatalf("last event %+v, want the pair with a direct verdict (report pair %+v)", evs[3], rep.Pair)
	}
	evs = evs[:3]
	plan, ok := evs[0].Data.(lab.Plan)
	if evs[0].Stage != lab.StageLab || !ok || plan.Backend != "in-process" || len(plan.Sites) != 2 || plan.Sites[1].Preset != "symmetric" {
		t.Fatalf("first event %+v, want the plan", evs[0])
	}
	seen := map[string]bool{}
	for _, e := range evs[1:] {
		s, ok := e.Data.(*lab.Site)
		if e.Stage != lab.StageSite || !ok || s.Profile == nil || e.Elapsed <= 0 {
			t.Fatalf("site event %+v", e)
		}
		seen[s.Name] = true
	}
	if !seen["a"] || !seen["b"] || len(rep.Sites) != 2 {
		t.Errorf("sites seen %v, report %d sites", seen, len(rep.Sites))
	}
}

// TestLabPairWithDelay: with a delay on each site's link the pair's
// figures are real round trips (an RTT multiple, the relay's cost); the
// one-site lab is not paired, and a backend that cannot pair says why.
func TestLabPairWithDelay(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), labBound)
	defer cancel()
	topo, err := testnet.PairTopology("port-restricted-cone", "full-cone")
	if err != nil {
		t.Fatal(err)
	}
	for i := range topo.Sites {
		topo.Sites[i].WAN.Delay = 15 * time.Millisecond
	}
	rep, err := lab.Run(ctx, lab.Options{Topology: topo})
	if err != nil {
		t.Fatal(err)
	}
	p := rep.Pair
	if p == nil || !p.Verdict.Direct || !strings.Contains(p.Verdict.Summary, " RTT), direct RTT ") || strings.Contains(p.Verdict.Summary, "LAN-scale") {
		t.Fatalf("pair %+v: want a direct verdict with an RTT multiple", p)
	}
	if p.Relay == nil || p.Relay.Cost == nil || p.Relay.Cost.LANScale {
		t.Errorf("relay cost %+v: want real round trips", p.Relay)
	}
	rep, err = lab.Run(ctx, lab.Options{NATA: "full-cone"})
	if err != nil || rep.Pair != nil || rep.PairSkipped != "" {
		t.Errorf("one site: %v, pair %+v %q", err, rep.Pair, rep.PairSkipped)
	}
	rep, err = lab.Run(ctx, lab.Options{NATA: "udp-blocked", NATB: "full-cone"})
	if err != nil || rep.Pair != nil || !strings.Contains(rep.PairSkipped, "site a: UDP is blocked") {
		t.Errorf("udp-blocked in-process: %v, pair %+v, skipped %q", err, rep.Pair, rep.PairSkipped)
	}
}
