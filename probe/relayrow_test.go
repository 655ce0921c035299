package probe

import (
	"testing"

	"github.com/natlab/natlab/natclass"
)

// TestRelayRowPrediction: relay over TCP is predicted from a UDP-blocked
// side's TCP profile: reached, blocked, or not measured.
func TestRelayRowPrediction(t *testing.T) {
	cone := natclass.Summary{NATType: natclass.PortRestrictedCone, TCPProfile: &natclass.TCPSummary{Reached: natclass.Yes}}
	blocked := func(reached natclass.Tri) natclass.Summary {
		s := natclass.Summary{NATType: natclass.UDPBlocked}
		if reached != natclass.NotChecked {
			s.TCPProfile = &natclass.TCPSummary{Reached: reached}
		}
		return s
	}
	for _, tc := range []struct {
		name       string
		self, peer natclass.Summary
		tech       natclass.Technique
		want       natclass.Outcome
	}{
		{"both UDP", cone, cone, natclass.RelayUDP, natclass.Success},
		{"blocked UDP, TCP reached", blocked(natclass.Yes), cone, natclass.RelayTCP, natclass.Success},
		{"blocked UDP, TCP blocked", cone, blocked(natclass.No), natclass.RelayTCP, natclass.Fail},
		{"blocked UDP, TCP not measured", blocked(natclass.NotChecked), cone, natclass.RelayTCP, natclass.UnknownOutcome},
	} {
		tr := relayRow(tc.self, tc.peer, RelayReport{})
		if tr.Technique != tc.tech || tr.Predicted != tc.want || tr.Reason == "" {
			t.Errorf("%s: %s predicted %s (%s), want %s %s", tc.name, tr.Technique, tr.Predicted, tr.Reason, tc.tech, tc.want)
		}
	}
}
