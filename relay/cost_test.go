package relay

import (
	"strings"
	"testing"
)

func TestCompareLANScale(t *testing.T) {
	c := Compare(Figures{RTTMedianMillis: 0.1, ThroughputMbps: 900}, Figures{RTTMedianMillis: 0.2, ThroughputMbps: 80})
	if !c.LANScale || !strings.Contains(c.Summary, "LAN-scale") || strings.Contains(c.Summary, "saves") {
		t.Errorf("LAN-scale paths: %+v", c)
	}
	c = Compare(Figures{RTTMedianMillis: 40, ThroughputMbps: 50}, Figures{RTTMedianMillis: 70, ThroughputMbps: 25})
	if c.LANScale || c.RTTSavedMillis != 30 || c.ThroughputGainPercent != 100 || !strings.HasPrefix(c.Summary, "direct saves 30.0 ms") {
		t.Errorf("real paths: %+v", c)
	}
}
