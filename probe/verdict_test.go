package probe

import (
	"strings"
	"testing"

	"github.com/natlab/natlab/natclass"
)

// TestVerdictNamesEveryTechnique: a success through any direct technique
// names it in the verdict (a mapped port once printed "Direct P2P works: ,").
func TestVerdictNamesEveryTechnique(t *testing.T) {
	for _, tech := range natclass.Techniques {
		v := verdict([]TechniqueResult{
			{Technique: natclass.DirectUDP, Predicted: natclass.Fail, Measured: natclass.Fail, Reason: "r"},
			{Technique: tech, Predicted: natclass.Success, Measured: natclass.Success, RTTMillis: 2, TimeToFirstPacketMillis: 3},
		})
		if tech == natclass.DirectUDP {
			continue // the first row already failed it
		}
		want := "Direct P2P works: " + tech.Name() + ", first packet"
		if !v.Direct || v.Technique != tech || !strings.HasPrefix(v.Summary, want) || tech.Name() == "" {
			t.Errorf("%s: verdict %+v, want summary starting %q", tech, v, want)
		}
	}
	if v := verdict([]TechniqueResult{{Technique: natclass.MappedUDP, Measured: natclass.Success}}); v.Summary != "Direct P2P works: UDP through a port mapped on the gateway" {
		t.Errorf("mapped port verdict %q", v.Summary)
	}
}

// TestVerdictLANScale: a sub-millisecond RTT (a lab without delay) gives
// no RTT multiple, which would measure the scheduler; a real RTT does.
func TestVerdictLANScale(t *testing.T) {
	for _, tt := range []struct {
		rtt, first float64
		want, not  string
	}{
		{0.05, 10, "direct RTT 0.05 ms (times are LAN-scale)", "RTT),"},
		{20, 30, "first packet after 30 ms (1.5 RTT), direct RTT 20.0 ms", "LAN-scale"},
	} {
		v := verdict([]TechniqueResult{{Technique: natclass.DirectUDP, Measured: natclass.Success, RTTMillis: tt.rtt, TimeToFirstPacketMillis: tt.first}})
		if !strings.Contains(v.Summary, tt.want) || strings.Contains(v.Summary, tt.not) {
			t.Errorf("rtt %v ms: %q, want %q and no %q", tt.rtt, v.Summary, tt.want, tt.not)
		}
	}
}
