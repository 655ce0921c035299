package probe

import (
	"fmt"
	"strings"

	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/relay"
)

// verdict picks the most preferred technique that worked, or explains why
// none did, from the predictions' reasons.
func verdict(ts []TechniqueResult) Verdict {
	for _, t := range ts {
		if t.Measured != natclass.Success {
			continue
		}
		s := fmt.Sprintf("Direct P2P works: %s", t.Technique.Name())
		switch {
		case t.RTTMillis >= relay.LANScaleMillis:
			s += fmt.Sprintf(", first packet after %.0f ms (%.1f RTT), direct RTT %.1f ms",
				t.TimeToFirstPacketMillis, t.TimeToFirstPacketMillis/t.RTTMillis, t.RTTMillis)
		case t.RTTMillis > 0:
			// A multiple of a sub-millisecond RTT measures the scheduler.
			s += fmt.Sprintf(", first packet after %.0f ms, direct RTT %.2f ms (times are LAN-scale)",
				t.TimeToFirstPacketMillis, t.RTTMillis)
		}
		return Verdict{Direct: true, Technique: t.Technique, Summary: s}
	}
	var why []string
	for _, t := range ts {
		if t.Technique == natclass.DirectUDP || (t.Predicted == natclass.Fail && len(why) == 0) {
			why = append(why, t.Reason)
		}
	}
	return Verdict{Summary: "Relay required: no direct technique worked (" + strings.Join(why, "; ") + ")"}
}
