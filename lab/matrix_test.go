package lab_test

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

// matrixBound bounds a whole matrix: 78 pairs, a few in parallel, the
// slowest (unpunchable) ones a few seconds per technique.
const matrixBound = 5 * time.Minute

// TestMatrix is issue #4's core promise: for every preset pair, predicted
// equals measured, and every punchable pair is punched; on the kernel
// backend over both topologies (issue #10: routers one router apart, and
// on one segment).
func TestMatrix(t *testing.T) {
	for _, run := range []struct {
		backend testnet.Backend
		seg     testnet.Segment
	}{{testnet.InProcess, testnet.Routed}, {testnet.Kernel, testnet.Routed}, {testnet.Kernel, testnet.Shared}} {
		// One after the other: two kernel matrices side by side load
		// the machine enough to skew the probes' timing.
		t.Run(string(run.backend)+"/"+string(run.seg), func(t *testing.T) { testMatrix(t, run.backend, run.seg) })
	}
}

func testMatrix(t *testing.T, backend testnet.Backend, seg testnet.Segment) {
	ctx, cancel := context.WithTimeout(context.Background(), matrixBound)
	defer cancel()
	rep, err := lab.RunMatrix(ctx, lab.MatrixOptions{Backend: backend, Segment: seg})
	if errors.Is(err, testnet.ErrNeedPrivileges) {
		t.Skipf("kernel lab: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range rep.Pairs {
		if p.Error != "" {
			t.Errorf("%s × %s: %s", p.A, p.B, p.Error)
		}
		for _, m := range p.Mismatches {
			t.Errorf("%s × %s: %s", p.A, p.B, m)
		}
		t.Logf("%-22s × %-22s %s", p.A, p.B, p.Verdict.Summary)
		if !p.Verdict.Direct && (p.Relay == nil || p.Relay.Relay == nil) {
			t.Errorf("%s × %s: no direct path and no relay figures: %s", p.A, p.B, p.Verdict.Summary)
		}
	}
	for pair, tech := range matrixWant(backend, seg) {
		c := rep.Cell(pair[0], pair[1])
		if c == nil {
			t.Fatalf("no cell %v", pair)
		}
		if c.Best() != tech {
			t.Errorf("%s × %s: best %q, want %q", pair[0], pair[1], c.Best(), tech)
		}
	}
	if backend == testnet.Kernel {
		checkTCPApart(t, rep)
	}
}

// checkTCPApart: routers whose cone is UDP-only (issue #10). Their TCP is
// measured and predicted apart: UDP punches, TCP does not.
func checkTCPApart(t *testing.T, rep *lab.MatrixReport) {
	for _, pair := range [][2]string{{"fullcone-udp", "symmetric"}, {"static-port-udp", "udp-blocked"}, {"restricted-cone-udp", "symmetric-sequential"}} {
		c := rep.Cell(pair[0], pair[1])
		if c == nil {
			t.Fatalf("no cell %v", pair)
		}
		for _, tr := range c.Techniques {
			if tr.Technique == natclass.DirectTCP && (tr.Predicted != natclass.Fail || tr.Measured != natclass.Fail) {
				t.Errorf("%s × %s: tcp predicted %s, measured %s; want fail (TCP is plain masquerade or random)", pair[0], pair[1], tr.Predicted, tr.Measured)
			}
		}
	}
}

// matrixWant is the best technique of the pairs the issues name.
func matrixWant(backend testnet.Backend, seg testnet.Segment) map[[2]string]natclass.Technique {
	want := map[[2]string]natclass.Technique{
		{"port-restricted-cone", "port-restricted-cone"}: natclass.DirectUDP,
		{"symmetric-sequential", "port-restricted-cone"}: natclass.PredictUDP,
		{"symmetric", "port-restricted-cone"}:            natclass.Birthday,
		{"symmetric", "full-cone"}:                       natclass.DirectUDP,
		{"symmetric", "restricted-cone"}:                 natclass.DirectUDP,
		{"symmetric", "symmetric"}:                       natclass.RelayUDP,
	}
	if backend == testnet.Kernel {
		// Issue #5: a UDP-blocked site relays over TCP.
		want[[2]string{"udp-blocked", "symmetric"}] = natclass.RelayTCP
		want[[2]string{"udp-blocked", "full-cone"}] = natclass.DirectTCP
	}
	if seg == testnet.Shared {
		// Issue #10, routers on one segment: no low-TTL opening, so two
		// port filters meet only over TCP, a port filter and a symmetric
		// NAT not at all, and the restricted cone (cause 3) opens first.
		want[[2]string{"port-restricted-cone", "port-restricted-cone"}] = natclass.DirectTCP
		want[[2]string{"symmetric-sequential", "port-restricted-cone"}] = natclass.RelayUDP
		want[[2]string{"symmetric", "port-restricted-cone"}] = natclass.RelayUDP
	}
	return want
}

// TestMatrixPlanExcludes: the plan event is the grid RunMatrix will run,
// with the presets this backend cannot pair left out and said why.
func TestMatrixPlanExcludes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), matrixBound)
	defer cancel()
	var plan *lab.MatrixPlan
	var pairs int
	rep, err := lab.RunMatrix(ctx, lab.MatrixOptions{Presets: []string{"full-cone", "udp-blocked"}, Events: func(e probe.Event) {
		switch d := e.Data.(type) {
		case lab.MatrixPlan:
			plan = &d
		case *lab.MatrixPair:
			pairs++
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if plan == nil || len(plan.Presets) != 1 || plan.Presets[0] != "full-cone" || plan.Excluded["udp-blocked"] == "" {
		t.Fatalf("plan %+v", plan)
	}
	if pairs != 1 || len(rep.Pairs) != 1 || rep.Excluded["udp-blocked"] != plan.Excluded["udp-blocked"] {
		t.Errorf("%d pair events, report %+v", pairs, rep)
	}
}
