package tui

import (
	"strings"
	"testing"

	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/probe"
	"github.com/natlab/natlab/relay"
)

// TestChartShowsTheBannersFigures: once the relay stage measured both
// paths, the chart draws the medians the verdict compares, not the
// punch's single round trip.
func TestChartShowsTheBannersFigures(t *testing.T) {
	var s probeScreen
	s.done(&probe.Report{
		Techniques: []probe.TechniqueResult{
			{Technique: natclass.DirectUDP, Measured: natclass.Success, RTTMillis: 97.0},
			{Technique: natclass.RelayUDP, Measured: natclass.Success, RTTMillis: 80.0},
		},
		Relay: &probe.RelayReport{Technique: natclass.RelayUDP, DirectTechnique: natclass.DirectUDP,
			Direct: &relay.Figures{RTTMedianMillis: 93.9}, Relay: &relay.Figures{RTTMedianMillis: 82.7}},
	})
	chart := strings.Join(s.chart(80), "\n")
	if !strings.Contains(chart, "93.9 ms") || !strings.Contains(chart, "82.7 ms") || strings.Contains(chart, "97.0 ms") {
		t.Errorf("chart:\n%s\nwant the medians 93.9 and 82.7 ms", chart)
	}
}
