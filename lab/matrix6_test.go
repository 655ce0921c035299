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

// TestMatrixIPv6 is issue #15's "natlab lab --kernel --matrix --ipv6 has
// every cell predicted = measured": every pair of IPv6 presets, both
// probes punching over IPv6 too, each IPv6 row predicted from the two
// measured IPv6 profiles and measured; the IPv6-only host behind NAT64
// runs its IPv4 plan through the NAT64.
func TestMatrixIPv6(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), matrixBound)
	defer cancel()
	rep, err := lab.RunMatrix(ctx, lab.MatrixOptions{Backend: testnet.Kernel, IPv6: true})
	if errors.Is(err, testnet.ErrNeedPrivileges) {
		t.Skipf("kernel lab: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	n := len(rep.Presets)
	if !rep.IPv6 || n != len(testnet.IPv6Presets()) || len(rep.Excluded) != 0 || len(rep.Pairs) != n*(n+1)/2 {
		t.Fatalf("presets %v, excluded %v, %d pairs", rep.Presets, rep.Excluded, len(rep.Pairs))
	}
	for _, p := range rep.Pairs {
		if p.Error != "" {
			t.Errorf("%s × %s: %s", p.A, p.B, p.Error)
		}
		for _, m := range p.Mismatches {
			t.Errorf("%s × %s: %s", p.A, p.B, m)
		}
		if len(p.IPv6) != len(natclass.Techniques) {
			t.Errorf("%s × %s: %d IPv6 rows, want %d", p.A, p.B, len(p.IPv6), len(natclass.Techniques))
		}
		for _, tr := range p.IPv6 {
			// Every IPv6 preset maps endpoint-independently, UDP and
			// TCP alike: both punch in every cell; port mapping is
			// IPv4's only.
			want := map[natclass.Technique]natclass.Outcome{natclass.DirectUDP: natclass.Success, natclass.DirectTCP: natclass.Success}[tr.Technique]
			if want == "" {
				want = natclass.Skipped
			}
			if tr.Predicted != want || tr.Measured != want {
				t.Errorf("%s × %s: ipv6 %s predicted %s, measured %s; want %s (%s)", p.A, p.B, tr.Technique, tr.Predicted, tr.Measured, want, tr.Reason)
			}
		}
		if p.Verdict.Family != "ipv6" || !strings.HasPrefix(p.Verdict.Summary, "Direct P2P works over IPv6") {
			t.Errorf("%s × %s: verdict %+v", p.A, p.B, p.Verdict)
		}
	}
	if !rep.Match {
		t.Error("report does not match")
	}
}

// TestMatrixIPv6InProcess: the in-process lab has no IPv6: a clear error
// before anything is built.
func TestMatrixIPv6InProcess(t *testing.T) {
	_, err := lab.RunMatrix(context.Background(), lab.MatrixOptions{IPv6: true})
	if !errors.Is(err, testnet.ErrNotSupported) || !strings.Contains(err.Error(), "kernel") {
		t.Errorf("err %v", err)
	}
}
