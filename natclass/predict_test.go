package natclass_test

import (
	"testing"

	"github.com/natlab/natlab/natclass"
)

// sum is a summary whose TCP behaves as its UDP does.
func sum(m, f natclass.Behavior, a natclass.Allocation) natclass.Summary {
	nat := m != ""
	return natclass.Summary{NATType: natclass.ClassicName(nat, m, f), Mapping: m, Filtering: f, Allocation: a, TCP: true,
		TCPProfile: tcpSum(m, f, a)}
}

func tcpSum(m, f natclass.Behavior, a natclass.Allocation) *natclass.TCPSummary {
	return &natclass.TCPSummary{Reached: natclass.Yes, Mapping: m, Filtering: f, Allocation: a}
}

// withTCP is s with another TCP behaviour.
func withTCP(s natclass.Summary, t *natclass.TCPSummary) natclass.Summary {
	s.TCPProfile = t
	return s
}

var (
	ei, ad, apd = natclass.EndpointIndependent, natclass.AddressDependent, natclass.AddressAndPortDependent
	fullCone    = sum(ei, ei, natclass.Preserving)
	restricted  = sum(ei, ad, natclass.Preserving)
	portRestr   = sum(ei, apd, natclass.Preserving)
	symRandom   = sum(apd, apd, natclass.Random)
	symSeq      = func() natclass.Summary { s := sum(apd, apd, natclass.Sequential); s.Step = 1; return s }()
	udpBlocked  = natclass.Summary{NATType: natclass.UDPBlocked, TCP: true, TCPProfile: tcpSum(ei, apd, natclass.Preserving)}
	// Routers whose cone is built from UDP-only rules: TCP is plain
	// masquerade (EIM/APDF), or randomised per connection.
	fullConeUDP   = withTCP(fullCone, tcpSum(ei, apd, natclass.Preserving))
	staticPortUDP = withTCP(portRestr, tcpSum(apd, apd, natclass.Random))
	tcpBlocked    = withTCP(portRestr, &natclass.TCPSummary{Reached: natclass.No})
	tcpUnmeasured = withTCP(fullCone, nil)
)

func TestPredict(t *testing.T) {
	S, F, K, U := natclass.Success, natclass.Fail, natclass.Skipped, natclass.UnknownOutcome
	tests := []struct {
		name                           string
		a, b                           natclass.Summary
		udp, predict, birthday, tcpOut natclass.Outcome
	}{
		{"cone pair", fullCone, portRestr, S, K, K, S},
		{"port-restricted pair", portRestr, portRestr, S, K, K, S},
		{"symmetric x full cone", symRandom, fullCone, S, K, S, S},
		{"symmetric x restricted cone", symRandom, restricted, S, K, S, S},
		{"symmetric x port-restricted", symRandom, portRestr, F, K, S, F},
		{"symmetric x symmetric", symRandom, symRandom, F, K, F, F},
		{"sequential x port-restricted", symSeq, portRestr, F, S, K, F},
		{"sequential x full cone", symSeq, fullCone, S, S, K, S},
		{"sequential x sequential", symSeq, symSeq, F, F, K, F},
		{"sequential x random", symSeq, symRandom, F, F, F, F},
		{"udp blocked x cone", udpBlocked, fullCone, F, F, F, S},
		{"udp blocked x symmetric", udpBlocked, symRandom, F, F, F, F},
		{"udp blocked x its TCP blocked too", udpBlocked, withTCP(udpBlocked, &natclass.TCPSummary{Reached: natclass.No}), F, F, F, F},
		{"UDP-only full cone x symmetric", fullConeUDP, symRandom, S, K, S, F},
		{"UDP-only full cone x full cone", fullConeUDP, fullCone, S, K, K, S},
		{"UDP-only static port x port-restricted", staticPortUDP, portRestr, S, K, K, F},
		{"UDP-only static port x full cone", staticPortUDP, fullCone, S, K, K, S},
		{"TCP-only full cone x symmetric", withTCP(portRestr, tcpSum(ei, ei, natclass.Preserving)), symRandom, F, K, S, S},
		{"TCP blocked x cone", tcpBlocked, fullCone, S, K, K, F},
		{"TCP not measured x cone", tcpUnmeasured, fullCone, S, K, K, U},
		{"TCP only partly measured", withTCP(fullCone, &natclass.TCPSummary{Reached: natclass.Yes, Mapping: ei}), fullCone, S, K, K, U},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, order := range [][2]natclass.Summary{{tt.a, tt.b}, {tt.b, tt.a}} {
				got := map[natclass.Technique]natclass.Prediction{}
				for _, p := range natclass.Predict(order[0], order[1]) {
					if p.Reason == "" {
						t.Errorf("%s: no reason", p.Technique)
					}
					got[p.Technique] = p
				}
				want := map[natclass.Technique]natclass.Outcome{
					natclass.SameLAN: K, natclass.DirectUDP: tt.udp, natclass.PredictUDP: tt.predict,
					natclass.Birthday: tt.birthday, natclass.MappedUDP: K, natclass.DirectTCP: tt.tcpOut,
				}
				if blocked := order[0].NATType == natclass.UDPBlocked || order[1].NATType == natclass.UDPBlocked; blocked {
					want[natclass.MappedUDP] = F
				}
				for tech, w := range want {
					if got[tech].Outcome != w {
						t.Errorf("%s: got %s (%s), want %s", tech, got[tech].Outcome, got[tech].Reason, w)
					}
				}
			}
		})
	}
}

// TestPredictProtocolsApart: every TCP prediction depends on the TCP
// profiles only, every UDP one on the UDP fields only. Each side's other
// protocol is set to every behaviour in turn, and nothing may change.
func TestPredictProtocolsApart(t *testing.T) {
	bs := []natclass.Behavior{ei, ad, apd}
	var tcps []*natclass.TCPSummary
	var udps []natclass.Summary
	for _, m := range bs {
		for _, f := range bs {
			for _, a := range []natclass.Allocation{natclass.Preserving, natclass.Sequential, natclass.Random} {
				tcps = append(tcps, tcpSum(m, f, a))
				udps = append(udps, sum(m, f, a))
			}
		}
	}
	udps = append(udps, udpBlocked)
	tcps = append(tcps, &natclass.TCPSummary{Reached: natclass.No}, nil)
	outcome := func(ps []natclass.Prediction, tech natclass.Technique) natclass.Outcome {
		for _, p := range ps {
			if p.Technique == tech {
				return p.Outcome
			}
		}
		return ""
	}
	for _, a := range udps {
		for _, b := range udps {
			base := natclass.Predict(a, b)
			for _, ta := range tcps {
				for _, tb := range tcps[:3] {
					got := natclass.Predict(withTCP(a, ta), withTCP(b, tb))
					for i, p := range got {
						if p.Technique != natclass.DirectTCP && p != base[i] {
							t.Fatalf("%s changed with the TCP profile: %+v, was %+v", p.Technique, p, base[i])
						}
					}
				}
			}
		}
	}
	for _, ta := range tcps {
		for _, tb := range tcps {
			want := outcome(natclass.Predict(withTCP(fullCone, ta), withTCP(fullCone, tb)), natclass.DirectTCP)
			for _, ua := range udps {
				for _, ub := range udps[:5] {
					if got := outcome(natclass.Predict(withTCP(ua, ta), withTCP(ub, tb)), natclass.DirectTCP); got != want {
						t.Fatalf("tcp changed with the UDP profile %+v / %+v: %s, want %s", ua, ub, got, want)
					}
				}
			}
		}
	}
}

func TestPredictSameLANAndNoTCP(t *testing.T) {
	a, b := portRestr, portRestr
	a.Mapped, b.Mapped = "198.51.100.10:4000", "198.51.100.10:5000"
	ps := natclass.Predict(a, b)
	if ps[0].Technique != natclass.SameLAN || ps[0].Outcome != natclass.Success {
		t.Errorf("same public IP: %+v", ps[0])
	}
	if best(ps) != natclass.SameLAN {
		t.Errorf("best %q", best(ps))
	}
	a.TCP = false
	for _, p := range natclass.Predict(a, b) {
		if p.Technique == natclass.DirectTCP && p.Outcome != natclass.Skipped {
			t.Errorf("tcp without TCP support: %+v", p)
		}
	}
}

func TestPredictPortMapping(t *testing.T) {
	a, b := symRandom, symRandom
	a.PortMapping = true
	for _, order := range [][2]natclass.Summary{{a, b}, {b, a}} {
		ps := natclass.Predict(order[0], order[1])
		if best(ps) != natclass.MappedUDP {
			t.Errorf("symmetric x symmetric with a mapping: best %q, want %q", best(ps), natclass.MappedUDP)
		}
	}
	blockedMapped := udpBlocked
	blockedMapped.PortMapping = true
	for _, p := range natclass.Predict(blockedMapped, symRandom) {
		if p.Technique == natclass.MappedUDP && p.Outcome != natclass.Fail {
			t.Errorf("mapping behind blocked UDP: %+v", p)
		}
	}
}

// best is the first technique predicted to succeed, or "".
func best(ps []natclass.Prediction) natclass.Technique {
	for _, p := range ps {
		if p.Outcome == natclass.Success {
			return p.Technique
		}
	}
	return ""
}
