package natclass_test

import (
	"testing"

	"github.com/natlab/natlab/natclass"
)

func sum(m, f natclass.Behavior, a natclass.Allocation) natclass.Summary {
	nat := m != ""
	return natclass.Summary{NATType: natclass.ClassicName(nat, m, f), Mapping: m, Filtering: f, Allocation: a, TCP: true}
}

var (
	ei, ad, apd = natclass.EndpointIndependent, natclass.AddressDependent, natclass.AddressAndPortDependent
	fullCone    = sum(ei, ei, natclass.Preserving)
	restricted  = sum(ei, ad, natclass.Preserving)
	portRestr   = sum(ei, apd, natclass.Preserving)
	symRandom   = sum(apd, apd, natclass.Random)
	symSeq      = func() natclass.Summary { s := sum(apd, apd, natclass.Sequential); s.Step = 1; return s }()
	udpBlocked  = natclass.Summary{NATType: natclass.UDPBlocked, TCP: true}
)

func TestPredict(t *testing.T) {
	S, F, K := natclass.Success, natclass.Fail, natclass.Skipped
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

func TestPredictSameLANAndNoTCP(t *testing.T) {
	a, b := portRestr, portRestr
	a.Mapped, b.Mapped = "198.51.100.10:4000", "198.51.100.10:5000"
	ps := natclass.Predict(a, b)
	if ps[0].Technique != natclass.SameLAN || ps[0].Outcome != natclass.Success {
		t.Errorf("same public IP: %+v", ps[0])
	}
	if natclass.Best(ps) != natclass.SameLAN {
		t.Errorf("best %q", natclass.Best(ps))
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
		if natclass.Best(ps) != natclass.MappedUDP {
			t.Errorf("symmetric x symmetric with a mapping: best %q, want %q", natclass.Best(ps), natclass.MappedUDP)
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
