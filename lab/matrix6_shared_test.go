package lab_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/natlab/natlab/lab"
	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/testnet"
)

// TestMatrixIPv6Shared runs the IPv6 matrix with the routers on one
// segment. Each probe traces toward the peer's public IPv6 address and
// the two swap the counts, so the IPv6 predictions know when nothing lies
// between the routers: two NAT66 routers, each receiving the other's
// early packets itself and filtering by port, lose udp; a NAT66 against
// a router that only forwards (firewall, NPTv6) punches when the NAT66
// side opens first. Every row of both families predicted = measured.
func TestMatrixIPv6Shared(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), matrixBound)
	defer cancel()
	// The presets the trap rule is about. nat66-random and
	// ipv6-firewall-udp-eif are left to the routed matrix
	// (TestMatrixIPv6) and to runs by hand: their 13 cells would double
	// this test's time, and their birthday probing loads the machine
	// while the other cells race (see issue-15-presets.md).
	presets := []string{"ipv6-firewall", "ipv6-open", "nat64", "nat66", "nptv6"}
	rep, err := lab.RunMatrix(ctx, lab.MatrixOptions{Backend: testnet.Kernel, IPv6: true, Segment: testnet.Shared, Presets: presets})
	if errors.Is(err, testnet.ErrNeedPrivileges) {
		t.Skipf("kernel lab: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if rep.Topology != string(testnet.Shared) {
		t.Errorf("topology %q", rep.Topology)
	}
	for _, p := range rep.Pairs {
		if p.Error != "" {
			t.Errorf("%s × %s: %s", p.A, p.B, p.Error)
		}
		for _, m := range p.Mismatches {
			t.Errorf("%s × %s: %s", p.A, p.B, m)
		}
		for _, tr := range p.IPv6 {
			if tr.Technique != natclass.DirectUDP {
				continue
			}
			want, reason := natclass.Success, ""
			switch {
			case p.A == "nat66" && p.B == "nat66":
				want, reason = natclass.Fail, "both filters look at the port"
			case (p.A == "nat66") != (p.B == "nat66") && p.A != "ipv6-open" && p.B != "ipv6-open":
				reason = "opens first"
			}
			if tr.Predicted != want || tr.Measured != want || !strings.Contains(tr.Reason, reason) {
				t.Errorf("%s × %s: ipv6 udp predicted %s, measured %s (%s); want %s, %q", p.A, p.B, tr.Predicted, tr.Measured, tr.Reason, want, reason)
			}
		}
	}
	if !rep.Match {
		t.Error("report does not match")
	}
}
