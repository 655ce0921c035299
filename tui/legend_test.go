package tui

import (
	"regexp"
	"strings"
	"testing"

	"github.com/natlab/natlab/lab"
	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/probe"
)

// TestMatrixLegendNamesEveryTechnique: the grid's cells are natclass's
// short names, and the legend explains each.
func TestMatrixLegendNamesEveryTechnique(t *testing.T) {
	legend := strings.Join(matrixLegend, " ")
	for _, ti := range natclass.AllTechniques() {
		if !regexp.MustCompile(`(^|[ ·])`+regexp.QuoteMeta(ti.Short)+`( /[^:]*)?:`).MatchString(legend) &&
			!strings.Contains(legend, "/ "+ti.Short+":") {
			t.Errorf("legend does not explain %q (%s)", ti.Short, ti.ID)
		}
		if got := cell(lab.MatrixPair{Verdict: probe.Verdict{Technique: ti.ID}}, true); got != ti.Short {
			t.Errorf("cell for %s = %q, want %q", ti.ID, got, ti.Short)
		}
	}
}

// TestTechniqueRowsFromData: a technique's row comes from its event's
// data, whatever the message says.
func TestTechniqueRowsFromData(t *testing.T) {
	var s probeScreen
	s.event(probe.Event{Stage: probe.StageTechnique, Step: 1, Message: "(any words)",
		Data: natclass.Prediction{Technique: natclass.Birthday, Outcome: natclass.Success, Reason: "r"}})
	if len(s.rows) != 1 || s.rows[0].Technique != natclass.Birthday || s.rows[0].Predicted != natclass.Success || s.rows[0].done || s.stage != stagePunch {
		t.Fatalf("after start: rows %+v stage %s", s.rows, s.stage)
	}
	s.event(probe.Event{Stage: probe.StageTechnique, Step: 1, Message: "x", Outcome: natclass.Fail,
		Data: probe.TechniqueResult{Technique: natclass.Birthday, Predicted: natclass.Success, Measured: natclass.Fail}})
	if len(s.rows) != 1 || !s.rows[0].done || s.rows[0].Measured != natclass.Fail {
		t.Fatalf("after end: rows %+v", s.rows)
	}
	s.event(probe.Event{Stage: probe.StageTechnique, Message: "relay-udp: predicted success",
		Data: natclass.Prediction{Technique: natclass.RelayUDP, Outcome: natclass.Success}})
	if s.stage != probe.StageRelay {
		t.Errorf("relay technique: stage %s", s.stage)
	}
	s.event(probe.Event{Stage: probe.StageTechnique, Message: "udp: predicted success"})
	if len(s.rows) != 2 {
		t.Errorf("an event without data made a row: %+v", s.rows)
	}
}

// TestIPv6RowsBesideIPv4: the IPv6 plan's events (Family "ipv6") make
// rows of their own, shown as "<technique> v6", and never overwrite the
// IPv4 row of the same technique.
func TestIPv6RowsBesideIPv4(t *testing.T) {
	var s probeScreen
	s.event(probe.Event{Stage: probe.StageTechnique, Step: 2, Outcome: natclass.Fail,
		Data: probe.TechniqueResult{Technique: natclass.DirectUDP, Predicted: natclass.Fail, Measured: natclass.Fail}})
	s.event(probe.Event{Stage: probe.StageTechnique, Step: 2, Family: "ipv6", Outcome: natclass.Success,
		Data: probe.TechniqueResult{Technique: natclass.DirectUDP, Predicted: natclass.Success, Measured: natclass.Success, RTTMillis: 0.3}})
	if len(s.rows) != 2 || s.rows[0].Measured != natclass.Fail || s.rows[1].Measured != natclass.Success || s.rows[1].family != "ipv6" {
		t.Fatalf("rows %+v", s.rows)
	}
	table := strings.Join(s.table(view{}), "\n")
	if !strings.Contains(table, "udp v6 ") || strings.Count(table, "udp") != 2 {
		t.Errorf("table:\n%s", table)
	}
	s.done(&probe.Report{Self: &natclass.Profile{}, Techniques: []probe.TechniqueResult{{Technique: natclass.DirectUDP}},
		IPv6: &probe.FamilyResult{Techniques: []probe.TechniqueResult{{Technique: natclass.DirectUDP}, {Technique: natclass.DirectTCP}}}})
	if len(s.rows) != 3 || s.rows[2].family != "ipv6" {
		t.Errorf("report rows %+v", s.rows)
	}
}

// TestMatrixDetailsIPv6: an IPv6 matrix cell's details list the IPv6
// rows after the IPv4 ones, each "<technique> v6", within 24 rows.
func TestMatrixDetailsIPv6(t *testing.T) {
	var rows4, rows6 []probe.TechniqueResult
	for _, tech := range natclass.Techniques {
		rows4 = append(rows4, probe.TechniqueResult{Technique: tech, Predicted: natclass.Skipped, Measured: natclass.Skipped, Reason: strings.Repeat("a long reason ", 12)})
		rows6 = append(rows6, probe.TechniqueResult{Technique: tech, Predicted: natclass.Success, Measured: natclass.Success, Reason: strings.Repeat("why ", 40)})
	}
	var s matrixScreen
	s.done(&lab.MatrixReport{IPv6: true, Presets: []string{"ipv6-firewall"}, Pairs: []lab.MatrixPair{{A: "ipv6-firewall", B: "ipv6-firewall",
		Techniques: rows4, IPv6: rows6, Verdict: probe.Verdict{Direct: true, Technique: natclass.DirectUDP, Summary: "Direct P2P works over IPv6"}}}})
	out := s.detailsView(view{width: 80})
	if !strings.Contains(out, "udp-birthday v6") || !strings.Contains(out, "\nudp-birthday     ") {
		t.Errorf("details:\n%s", out)
	}
	if n := strings.Count(out, "\n") + 1; n > 3+3+2*len(natclass.Techniques)*2 {
		t.Errorf("%d lines:\n%s", n, out)
	}
}
