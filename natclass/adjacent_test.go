package natclass_test

import (
	"testing"

	"github.com/natlab/natlab/natclass"
)

// between is s with a measured count of routers toward the peer.
func between(s natclass.Summary, n int) natclass.Summary {
	s.RoutersBetween = &n
	return s
}

// IPv6 summaries as the kernel lab's presets measure them: a stateful
// firewall without NAT, NAT66 masquerade, NPTv6 (all EIM, APDF).
var (
	firewall6 = func() natclass.Summary {
		s := portRestr
		s.NATType, s.Translation = natclass.SymmetricFirewall, natclass.TranslationNone
		return s
	}()
	nat66  = func() natclass.Summary { s := portRestr; s.Translation = natclass.TranslationNAT66; return s }()
	nptv66 = func() natclass.Summary { s := portRestr; s.Translation = natclass.TranslationNPTv6; return s }()
)

// TestPredictAdjacent: where a trace found no router between the NATs,
// punching that relies on a low-TTL opening fails between two port
// filters (A opens, by role, so the trap always springs), needs the
// address filter to open first against a port filter,
// and is unaffected by a filter that admits any sender; one router between
// (or no measurement) keeps the routed predictions. TCP keeps its own.
func TestPredictAdjacent(t *testing.T) {
	type want struct {
		o      natclass.Outcome
		opener string
	}
	S, F := natclass.Success, natclass.Fail
	tests := []struct {
		name     string
		a, b     natclass.Summary
		udp      want
		predict  want
		birthday want
		tcp      natclass.Outcome
	}{
		{"two port filters", between(portRestr, 0), between(portRestr, 0), want{F, "A"}, want{natclass.Skipped, ""}, want{natclass.Skipped, ""}, S},
		{"one side measured none", between(portRestr, 1), between(portRestr, 0), want{F, "A"}, want{natclass.Skipped, ""}, want{natclass.Skipped, ""}, S},
		{"a router between", between(portRestr, 1), between(portRestr, 1), want{S, ""}, want{natclass.Skipped, ""}, want{natclass.Skipped, ""}, S},
		{"not measured", portRestr, portRestr, want{S, ""}, want{natclass.Skipped, ""}, want{natclass.Skipped, ""}, S},
		{"address filter opens first", between(portRestr, 0), between(restricted, 0), want{S, "B"}, want{natclass.Skipped, ""}, want{natclass.Skipped, ""}, S},
		{"address filters both", between(restricted, 0), between(restricted, 0), want{S, ""}, want{natclass.Skipped, ""}, want{natclass.Skipped, ""}, S},
		{"any-sender filter", between(fullCone, 0), between(portRestr, 0), want{S, ""}, want{natclass.Skipped, ""}, want{natclass.Skipped, ""}, S},
		{"cause 3: restricted cone and symmetric", between(restricted, 0), between(symRandom, 0), want{S, "A"}, want{natclass.Skipped, ""}, want{S, "A"}, S},
		{"port filter and random symmetric", between(symRandom, 0), between(portRestr, 0), want{F, ""}, want{natclass.Skipped, ""}, want{F, "A"}, F},
		{"port filter and sequential symmetric", between(portRestr, 0), between(symSeq, 0), want{F, ""}, want{F, "A"}, want{natclass.Skipped, ""}, F},
		{"restricted cone and sequential", between(symSeq, 0), between(restricted, 0), want{S, "B"}, want{S, "B"}, want{natclass.Skipped, ""}, S},
		// IPv6 on one segment: only a NAT to the router's own address
		// receives the peer's early packets itself.
		{"IPv6 firewall and NAT66", between(firewall6, 0), between(nat66, 1), want{S, "B"}, want{natclass.Skipped, ""}, want{natclass.Skipped, ""}, S},
		{"NPTv6 and NAT66", between(nptv66, 0), between(nat66, 1), want{S, "B"}, want{natclass.Skipped, ""}, want{natclass.Skipped, ""}, S},
		{"NAT66 and NAT66", between(nat66, 0), between(nat66, 0), want{F, "A"}, want{natclass.Skipped, ""}, want{natclass.Skipped, ""}, S},
		{"IPv6 firewall and NPTv6", between(firewall6, 0), between(nptv66, 0), want{S, ""}, want{natclass.Skipped, ""}, want{natclass.Skipped, ""}, S},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, order := range []bool{false, true} {
				a, b, w := tc.a, tc.b, map[natclass.Technique]want{natclass.DirectUDP: tc.udp, natclass.PredictUDP: tc.predict, natclass.Birthday: tc.birthday}
				if order {
					// Symmetric: swapping the sides swaps the opener,
					// except where both fail: there A opens by role.
					a, b = b, a
					for k, v := range w {
						switch v.opener {
						case "A":
							if v.o != F {
								v.opener = "B"
							}
						case "B":
							v.opener = "A"
						}
						w[k] = v
					}
				}
				for _, p := range natclass.Predict(a, b) {
					if x, ok := w[p.Technique]; ok && (p.Outcome != x.o || p.Opener != x.opener) {
						t.Errorf("swapped %v: %s: %s opener %q (%s), want %s opener %q", order, p.Technique, p.Outcome, p.Opener, p.Reason, x.o, x.opener)
					}
					if p.Technique == natclass.DirectTCP && p.Outcome != tc.tcp {
						t.Errorf("swapped %v: tcp: %s (%s), want %s", order, p.Outcome, p.Reason, tc.tcp)
					}
				}
			}
		})
	}
}
