package probe_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/natlab/natlab/lab"
	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/probe"
	"github.com/natlab/natlab/testnet"
)

// pairBound bounds one paired probe: profiles, five techniques of at most
// a few seconds each (birthday up to 10 s).
const pairBound = 60 * time.Second

func runPair(t *testing.T, backend testnet.Backend, natA, natB string) (a, b *probe.Report) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), pairBound)
	defer cancel()
	topo, err := testnet.PairTopology(natA, natB)
	if err != nil {
		t.Fatal(err)
	}
	tl, err := testnet.Start(ctx, topo, backend)
	if errors.Is(err, testnet.ErrNeedPrivileges) || errors.Is(err, testnet.ErrNoMiniUPnPd) {
		t.Skipf("%s lab: %v", backend, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer tl.Close()
	return runPairIn(ctx, t, tl)
}

func runPairIn(ctx context.Context, t *testing.T, tl *testnet.Lab) (a, b *probe.Report) {
	t.Helper()
	reps, err := lab.RunPair(ctx, tl, nil)
	if err != nil {
		t.Fatalf("probe pair: %v", err)
	}
	return reps[0], reps[1]
}

func TestProbePairInProcess(t *testing.T) {
	a, b := runPair(t, testnet.InProcess, "port-restricted-cone", "full-cone")
	for _, r := range []*probe.Report{a, b} {
		for _, tr := range r.Techniques {
			t.Logf("%s %s: predicted %s measured %s attempts %d ttfp %.1f ms rtt %.1f ms %s", r.Side, tr.Technique, tr.Predicted, tr.Measured, tr.Attempts, tr.TimeToFirstPacketMillis, tr.RTTMillis, tr.Error)
		}
		t.Logf("%s verdict: %s", r.Side, r.Verdict.Summary)
		if !r.Verdict.Direct || r.Verdict.Technique != natclass.DirectUDP {
			t.Errorf("%s: verdict %+v", r.Side, r.Verdict)
		}
	}
}

// TestProbePortMapping: symmetric x symmetric cannot be punched, but a port
// mapped through miniupnpd on A's router makes it direct (issue #7).
func TestProbePortMapping(t *testing.T) {
	a, b := runPair(t, testnet.Kernel, "symmetric+upnp", "symmetric")
	for _, r := range []*probe.Report{a, b} {
		for _, tr := range r.Techniques {
			if tr.Predicted != tr.Measured {
				t.Errorf("%s %s: predicted %s, measured %s (%s)", r.Side, tr.Technique, tr.Predicted, tr.Measured, tr.Error)
			}
		}
		if r.Verdict.Technique != natclass.MappedUDP {
			t.Errorf("%s: verdict %+v, want %s", r.Side, r.Verdict, natclass.MappedUDP)
		}
	}
	var mapped *probe.Report
	for _, r := range []*probe.Report{a, b} {
		if r.PortMapping != nil && r.PortMapping.Any() {
			mapped = r
		}
	}
	if mapped == nil {
		t.Fatal("no side reports a port-mapping gateway")
	}
	if in := mapped.PortMapping.Inbound; in == nil || in.Admitted != natclass.Yes {
		t.Errorf("test mapping not verified: %+v", in)
	}
}
