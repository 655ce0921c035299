package lab_test

import (
	"strings"
	"testing"

	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/probe"
)

// TestProbeIPv6 pairs two hosts whose IPv4 NATs are symmetric (no direct
// IPv4 path: the IPv4 techniques fail as predicted) and whose IPv6 sits
// behind stateful firewalls: the IPv6 stage punches through, and the
// verdict prefers IPv6 and says so. Then the same with NAT66 on one side.
func TestProbeIPv6(t *testing.T) {
	for _, c := range []struct {
		six  [2]string
		want natclass.Outcome
	}{
		{[2]string{"ipv6-firewall", "ipv6-firewall"}, natclass.Success},
		{[2]string{"ipv6-firewall", "nat66"}, natclass.Success},
	} {
		t.Run(c.six[0]+"×"+c.six[1], func(t *testing.T) {
			reps := probePair(t, c.six)
			for i, r := range reps {
				if r.IPv6 == nil || r.IPv6.Measured != c.want || r.IPv6.Self == nil || r.IPv6.Peer == nil {
					t.Fatalf("side %d: ipv6 stage %+v", i, r.IPv6)
				}
				if r.IPv6.Self.TCP == nil || r.IPv6.Self.TCP.Reached != natclass.Yes {
					t.Errorf("side %d: no TCP profile over IPv6: %+v", i, r.IPv6.Self.TCP)
				}
				for _, ts := range [][]probe.TechniqueResult{r.Techniques, r.IPv6.Techniques} {
					for _, tr := range ts {
						t.Logf("side %d: %s predicted %s measured %s (%s) %s", i, tr.Technique, tr.Predicted, tr.Measured, tr.Reason, tr.Error)
						if tr.Measured != tr.Predicted {
							t.Errorf("side %d: %s predicted %s, measured %s", i, tr.Technique, tr.Predicted, tr.Measured)
						}
					}
				}
				// The hop-limit trace toward the peer's public IPv6
				// address (routed: the internet router between, and the
				// peer's own router when the peer keeps a global
				// address), swapped with the peer.
				want := 2
				if c.six[1-i] == "nat66" {
					want = 1
				}
				other := reps[1-i].IPv6
				if p := r.IPv6.Path; p == nil || p.RoutersBetween == nil || *p.RoutersBetween != want {
					t.Errorf("side %d: IPv6 path %+v, want %d routers between", i, p, want)
				} else if other.Path == nil || r.IPv6.Peer.RoutersBetween == nil || *r.IPv6.Peer.RoutersBetween != *deref6(other.Path) {
					t.Errorf("side %d: peer's routers between %v, its path %+v", i, r.IPv6.Peer.RoutersBetween, other.Path)
				}
				if len(r.IPv6.Techniques) != len(natclass.Techniques) {
					t.Errorf("side %d: %d IPv6 rows, want one per technique", i, len(r.IPv6.Techniques))
				}
				v := r.Verdict
				t.Logf("side %d: %s", i, v.Summary)
				if !v.Direct || v.Family != "ipv6" || !strings.HasPrefix(v.Summary, "Direct P2P works over IPv6 (prefer it)") {
					t.Errorf("side %d: verdict %+v", i, v)
				}
			}
		})
	}
}

// deref6 is a path's count of routers between (-1: not measured).
func deref6(p *natclass.PeerPath) *int {
	n := -1
	if p.RoutersBetween != nil {
		n = *p.RoutersBetween
	}
	return &n
}

func probePair(t *testing.T, six [2]string) [2]*probe.Report {
	t.Helper()
	_, _, reps := probeDualStack(t, presets6(t, six), false)
	return reps
}
