package natclass_test

import (
	"testing"

	"github.com/natlab/natlab/natclass"
)

// TestTechniqueTable: every technique has every entry, names are unique,
// the direct ones are the predictor's list in its order, and the relays
// come after them.
func TestTechniqueTable(t *testing.T) {
	all := natclass.AllTechniques()
	names, shorts := map[string]bool{}, map[string]bool{}
	for i, ti := range all {
		if ti.ID == "" || ti.Name == "" || ti.Short == "" || (ti.Transport != "udp" && ti.Transport != "tcp") {
			t.Errorf("row %d incomplete: %+v", i, ti)
		}
		if names[ti.Name] || shorts[ti.Short] {
			t.Errorf("%s: name %q or short %q used twice", ti.ID, ti.Name, ti.Short)
		}
		names[ti.Name], shorts[ti.Short] = true, true
		if got := ti.ID.Info(); got != ti {
			t.Errorf("%s.Info() = %+v, want %+v", ti.ID, got, ti)
		}
		if i < len(natclass.Techniques) {
			if ti.ID != natclass.Techniques[i] || ti.Relay {
				t.Errorf("row %d is %s (relay %v), want direct %s", i, ti.ID, ti.Relay, natclass.Techniques[i])
			}
		} else if !ti.Relay {
			t.Errorf("row %d (%s) after the direct techniques is not a relay", i, ti.ID)
		}
	}
	if want := len(natclass.Techniques) + 2; len(all) != want {
		t.Errorf("%d techniques in the table, want %d", len(all), want)
	}
	for _, tech := range []natclass.Technique{natclass.RelayUDP, natclass.RelayTCP} {
		if !tech.IsRelay() {
			t.Errorf("%s is not a relay", tech)
		}
	}
	if u := natclass.Technique("carrier-pigeon"); u.Name() != "carrier-pigeon" || u.Short() != "carrier-pigeon" || u.IsRelay() {
		t.Errorf("unknown technique: %+v", u.Info())
	}
}
