package lab_test

import (
	"context"
	"errors"
	"slices"
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
// runs its IPv4 plan through the NAT64. Each cell's IPv6 rows must also
// be what the two routers' rules allow (works6), so a predictor and a
// measurement wrong together still fail.
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
		checkCell6(t, p)
	}
	if !rep.Match {
		t.Error("report does not match")
	}
}

// works6 is what works over IPv6 between two presets' routers, by their
// rules: every pair of endpoint-independent mappings punches UDP and TCP
// (simultaneous sends open RFC 6092 firewalls as they open cones). A
// NAT66 with random ports per flow (nat66-random) punches UDP only into
// a filter that ignores the port (ipv6-open, and the UDP pinholes of
// ipv6-firewall-udp-eif), TCP only into ipv6-open (the pinholes are
// UDP's), and needs birthday probing against every EIM router; two of
// them meet nowhere. ipv6-tcp-only passes no UDP: its pairs meet over
// TCP, except with nat66-random, whose TCP mapping its filter never
// admits. The nat64 site's own IPv6 is behind a stateful firewall
// (ipv6-firewall's). Port mapping is IPv4's only. Pairs not listed
// punch UDP and TCP (with ipv6-tcp-only: TCP).
var works6 = map[[2]string][]natclass.Technique{
	{"ipv6-firewall", "nat66-random"}:         {natclass.Birthday},
	{"ipv6-firewall-udp-eif", "nat66-random"}: {natclass.DirectUDP, natclass.Birthday},
	{"ipv6-open", "nat66-random"}:             {natclass.DirectUDP, natclass.Birthday, natclass.DirectTCP},
	{"ipv6-tcp-only", "nat66-random"}:         nil,
	{"nat64", "nat66-random"}:                 {natclass.Birthday},
	{"nat66", "nat66-random"}:                 {natclass.Birthday},
	{"nat66-random", "nptv6"}:                 {natclass.Birthday},
	{"nat66-random", "nat66-random"}:          nil,
}

// want6 is what a cell's IPv6 row for technique tech must say, by
// works6: the relay (over TCP when a side passes TCP only) works in every
// cell; what works6 lists succeeds; the UDP techniques that apply to the
// pair, and TCP, fail otherwise; the rest are skipped.
func want6(a, b string, tech natclass.Technique) natclass.Outcome {
	tcpOnly := a == "ipv6-tcp-only" || b == "ipv6-tcp-only"
	random := a == "nat66-random" || b == "nat66-random"
	works, ok := works6[[2]string{a, b}]
	switch {
	case !ok && tcpOnly:
		works = []natclass.Technique{natclass.DirectTCP}
	case !ok:
		works = []natclass.Technique{natclass.DirectUDP, natclass.DirectTCP}
	}
	switch tech {
	case natclass.RelayUDP, natclass.RelayTCP:
		if (tech == natclass.RelayTCP) == tcpOnly {
			return natclass.Success
		}
		return natclass.Skipped
	case natclass.SameLAN:
		return natclass.Skipped
	}
	switch {
	case slices.Contains(works, tech):
		return natclass.Success
	case tech == natclass.DirectUDP || tech == natclass.DirectTCP, tcpOnly, tech == natclass.Birthday && random:
		// Without UDP every UDP technique fails, port mapping included.
		return natclass.Fail
	}
	return natclass.Skipped
}

// checkCell6 compares a cell's IPv6 rows and verdict with works6.
func checkCell6(t *testing.T, p lab.MatrixPair) {
	t.Helper()
	// The direct techniques, then the IPv6 relay (the matrix probes with
	// the lab's TURN credentials).
	if len(p.IPv6) != len(natclass.Techniques)+1 || !p.IPv6[len(p.IPv6)-1].Technique.IsRelay() {
		t.Errorf("%s × %s: %d IPv6 rows, want %d, the relay last", p.A, p.B, len(p.IPv6), len(natclass.Techniques)+1)
	}
	direct := false
	for _, tr := range p.IPv6 {
		want := want6(p.A, p.B, tr.Technique)
		if tr.Predicted != want || tr.Measured != want {
			t.Errorf("%s × %s: ipv6 %s predicted %s, measured %s; want %s (%s)", p.A, p.B, tr.Technique, tr.Predicted, tr.Measured, want, tr.Reason)
		}
		direct = direct || (want == natclass.Success && !tr.Technique.IsRelay())
	}
	if direct && (p.Verdict.Family != "ipv6" || !strings.HasPrefix(p.Verdict.Summary, "Direct P2P works over IPv6")) {
		t.Errorf("%s × %s: verdict %+v", p.A, p.B, p.Verdict)
	}
	if !direct && (p.Verdict.Family != "ipv4" || !strings.Contains(p.Verdict.Summary, "IPv6: no direct path")) {
		t.Errorf("%s × %s: verdict %+v, want IPv4's with no IPv6 path", p.A, p.B, p.Verdict)
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
