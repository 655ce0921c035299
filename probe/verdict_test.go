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
