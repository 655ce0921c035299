package probe

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/natlab/natlab/natclass"
)

// TestIPv6PlanOnlyWithBothSummaries: the IPv6 plan runs exactly when both
// sides sent summary6; a peer from before the plan sends only "v6", and
// neither side runs anything over IPv6 (no barrier waits for the other).
func TestIPv6PlanOnlyWithBothSummaries(t *testing.T) {
	self6 := &natclass.Profile{NATType: natclass.SymmetricFirewall, Mapping: natclass.EndpointIndependent, Filtering: natclass.AddressAndPortDependent}
	for _, c := range []struct {
		name, peer string
		self6      *natclass.Profile
		want       bool
	}{
		{"both", `{"summary":{"nat_type":"open","tcp":true},"summary6":{"nat_type":"open","tcp":true}}`, self6, true},
		{"old peer with IPv6", `{"summary":{"nat_type":"open","tcp":true},"v6":true}`, self6, false},
		{"peer without IPv6", `{"summary":{"nat_type":"open","tcp":true}}`, self6, false},
		{"this side without IPv6", `{"summary":{"nat_type":"open","tcp":true},"summary6":{"nat_type":"open","tcp":true}}`, nil, false},
	} {
		var pi peerInfo
		if err := json.Unmarshal([]byte(c.peer), &pi); err != nil {
			t.Fatal(err)
		}
		a := &agent{self6: c.self6, peer6: pi.Summary6}
		if got := a.runs6(); got != c.want {
			t.Errorf("%s: runs6 %v, want %v", c.name, got, c.want)
		}
	}
	// What this side sends: summary6 when profiled over IPv6, never the
	// old "v6" (an old peer would then wait at its own IPv6 barriers).
	a := &agent{self: &natclass.Profile{NATType: natclass.Open}, self6: self6, tcp: true}
	raw, err := json.Marshal(a.info())
	if err != nil {
		t.Fatal(err)
	}
	if s := string(raw); !strings.Contains(s, `"summary6":{"nat_type":"symmetric-firewall"`) || strings.Contains(s, `"v6"`) {
		t.Errorf("peer info %s", s)
	}
}

// TestPreferFamily: the IPv6 result's technique is the best IPv6 row that
// worked (not only UDP), and the verdict prefers a direct IPv6 path.
func TestPreferFamily(t *testing.T) {
	row := func(tech natclass.Technique, o natclass.Outcome) TechniqueResult {
		return TechniqueResult{Technique: tech, Predicted: o, Measured: o, Reason: "why " + string(tech), RTTMillis: 1, TimeToFirstPacketMillis: 2}
	}
	relay := Verdict{Summary: "Relay required: x"}
	direct4 := Verdict{Direct: true, Technique: natclass.DirectUDP, Summary: "Direct P2P works: UDP hole punch"}
	for _, c := range []struct {
		name   string
		rows   []TechniqueResult
		v4     Verdict
		tech   natclass.Technique
		family string
		prefix string
	}{
		{"tcp only over IPv6", []TechniqueResult{row(natclass.DirectUDP, natclass.Fail), row(natclass.DirectTCP, natclass.Success)}, relay,
			natclass.DirectTCP, "ipv6", "Direct P2P works over IPv6 (prefer it): TCP simultaneous open over IPv6"},
		{"both families", []TechniqueResult{row(natclass.DirectUDP, natclass.Success)}, direct4,
			natclass.DirectUDP, "ipv6", "Direct P2P works over IPv6 and IPv4; prefer IPv6 (RFC 8305): UDP hole punch over IPv6"},
		{"IPv4 only", []TechniqueResult{row(natclass.DirectUDP, natclass.Fail), row(natclass.DirectTCP, natclass.Fail)}, direct4,
			natclass.DirectUDP, "ipv4", "Direct P2P works: UDP hole punch; IPv6: no direct path (why udp)"},
	} {
		fr := &FamilyResult{Techniques: c.rows}
		fr.best()
		v := preferFamily(c.v4, fr)
		if v.Technique != c.tech || v.Family != c.family || !strings.HasPrefix(v.Summary, c.prefix) {
			t.Errorf("%s: verdict %+v, want %s over %s, summary starting %q", c.name, v, c.tech, c.family, c.prefix)
		}
	}
}
