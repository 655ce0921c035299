package relay

import "fmt"

// Cost is what the relay costs against the direct path, from the two
// measurements of one pair.
type Cost struct {
	// RTTSavedMillis is the relayed median RTT minus the direct one: what
	// going direct saves on every round trip (negative if the relay is
	// faster, which happens when it sits on a better route).
	RTTSavedMillis float64 `json:"rtt_saved_ms"`
	// ThroughputGainPercent is how much more the direct path carries than
	// the relay, in percent of the relay's throughput.
	ThroughputGainPercent float64 `json:"throughput_gain_pct"`
	// LANScale is set when both paths' RTTs are LAN-scale (a lab without
	// delay, two hosts on one network): their difference is noise, not
	// the relay's cost, and the summary says so instead.
	LANScale bool `json:"lan_scale,omitempty"`
	// Summary is the sentence for people.
	Summary string `json:"summary"`
}

// LANScaleMillis is the median RTT below which a path is LAN-scale:
// scheduling and copying, not distance, make up such a round trip.
const LANScaleMillis = 2.0

// Compare states the relay's cost from a direct and a relayed measurement
// of the same pair.
func Compare(direct, relayed Figures) Cost {
	c := Cost{RTTSavedMillis: round2(relayed.RTTMedianMillis - direct.RTTMedianMillis)}
	if relayed.ThroughputMbps > 0 {
		c.ThroughputGainPercent = round2(100 * (direct.ThroughputMbps - relayed.ThroughputMbps) / relayed.ThroughputMbps)
	}
	if direct.RTTMedianMillis < LANScaleMillis && relayed.RTTMedianMillis < LANScaleMillis {
		c.LANScale = true
		c.Summary = fmt.Sprintf("both paths are LAN-scale (%.2f vs %.2f ms median RTT, %.1f vs %.1f Mbit/s): their difference is noise here, not the relay's cost",
			direct.RTTMedianMillis, relayed.RTTMedianMillis, direct.ThroughputMbps, relayed.ThroughputMbps)
		return c
	}
	c.Summary = fmt.Sprintf("direct saves %.1f ms per round trip (%.1f vs %.1f ms median) and carries %+.0f%% throughput (%.1f vs %.1f Mbit/s)",
		c.RTTSavedMillis, direct.RTTMedianMillis, relayed.RTTMedianMillis,
		c.ThroughputGainPercent, direct.ThroughputMbps, relayed.ThroughputMbps)
	return c
}
