package probe

import (
	"strings"
	"testing"

	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/relay"
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

// TestRelayFamilies: with no direct path in either family, the verdict
// names the relay that worked and its family, IPv6 first when both did,
// and says why the other failed; a direct path leaves it alone.
func TestRelayFamilies(t *testing.T) {
	fig := &relay.Figures{RTTMedianMillis: 1.5, RTTP95Millis: 2, ThroughputMbps: 90}
	ok := &RelayReport{Technique: natclass.RelayUDP, Transport: relay.UDP, Relay: fig}
	tcp := &RelayReport{Technique: natclass.RelayTCP, Transport: relay.TCP, PeerTransport: relay.UDP, Relay: fig}
	failed := &RelayReport{Error: "no TURN allocation worked on this side"}
	none := Verdict{Summary: "Relay required: no direct technique worked (x)"}
	for _, tc := range []struct {
		name          string
		v             Verdict
		r4, r6        *RelayReport
		tech          natclass.Technique
		family, start string
	}{
		{"both relays", none, ok, tcp, natclass.RelayTCP, "ipv6", "Relay required (no direct path over IPv4 or IPv6): use IPv6 (preferred, RFC 8305): Relay over tcp only"},
		{"IPv6 relay only", none, failed, ok, natclass.RelayUDP, "ipv6", "Relay required (no direct path over IPv4 or IPv6): use IPv6: Relay over UDP (TURN): RTT 1.5 ms"},
		{"IPv4 relay only", none, ok, failed, natclass.RelayUDP, "ipv4", "Relay required (no direct path over IPv4 or IPv6): use IPv4: Relay over UDP"},
		{"no relay", none, failed, failed, "", "", "No path: no direct technique and no relay worked over IPv4 or IPv6 (IPv4: no relay (no TURN allocation"},
		{"direct over IPv6", Verdict{Direct: true, Technique: natclass.DirectUDP, Family: "ipv6", Summary: "Direct"}, ok, ok, natclass.DirectUDP, "ipv6", "Direct"},
		{"no IPv6 relay stage", none, ok, nil, "", "", none.Summary},
		{"direct over IPv6, relay priced", Verdict{Direct: true, Technique: natclass.DirectUDP, Family: "ipv6", Summary: "Direct"}, ok,
			&RelayReport{Technique: natclass.RelayUDP, Relay: fig, Cost: &relay.Cost{Summary: "direct saves 1 ms"}}, natclass.DirectUDP, "ipv6", "Direct; over IPv6 direct saves 1 ms"},
	} {
		v := relayFamilies(tc.v, tc.r4, tc.r6)
		if v.Technique != tc.tech || v.Family != tc.family || !strings.HasPrefix(v.Summary, tc.start) || v.Direct != tc.v.Direct {
			t.Errorf("%s: %+v", tc.name, v)
		}
	}
}
