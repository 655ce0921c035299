package cmd

import (
	"regexp"
	"strings"
	"testing"

	"github.com/natlab/natlab/lab"
	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/probe"
)

// TestMatrixLegendNamesEveryTechnique: the text grid's cells are
// natclass's short names, and the legend explains each.
func TestMatrixLegendNamesEveryTechnique(t *testing.T) {
	legend := strings.Join(matrixLegend, " ")
	for _, ti := range natclass.AllTechniques() {
		if !regexp.MustCompile(`(^|; |\s)` + regexp.QuoteMeta(ti.Short) + `:`).MatchString(legend) {
			t.Errorf("legend does not explain %q (%s)", ti.Short, ti.ID)
		}
	}
}

// TestMatrixText6: the IPv6 matrix's text lists the presets by letter,
// each IPv6 cell every direct technique that worked (a relay only where
// none did, "none" where nothing did, "!" on a mismatch), and the IPv4
// grid as one line when every pair is alike, else as a grid.
func TestMatrixText6(t *testing.T) {
	row := func(tech natclass.Technique, o natclass.Outcome) probe.TechniqueResult {
		return probe.TechniqueResult{Technique: tech, Predicted: o, Measured: o}
	}
	S, F := natclass.Success, natclass.Fail
	v4 := []probe.TechniqueResult{row(natclass.DirectUDP, S), row(natclass.DirectTCP, S), row(natclass.RelayUDP, S)}
	r := &lab.MatrixReport{Backend: "kernel", IPv6: true, Presets: []string{"ipv6-firewall", "nat66-random"}, Match: true, Pairs: []lab.MatrixPair{
		{A: "ipv6-firewall", B: "ipv6-firewall", Techniques: v4, IPv6: []probe.TechniqueResult{row(natclass.DirectUDP, S), row(natclass.DirectTCP, S), row(natclass.RelayUDP, S)}},
		{A: "ipv6-firewall", B: "nat66-random", Techniques: v4, IPv6: []probe.TechniqueResult{row(natclass.DirectUDP, F), row(natclass.Birthday, S), row(natclass.DirectTCP, F)}},
		{A: "nat66-random", B: "nat66-random", Techniques: v4, IPv6: []probe.TechniqueResult{row(natclass.DirectUDP, F), row(natclass.RelayUDP, S)}},
	}}
	var b strings.Builder
	if err := writeMatrix(&b, r); err != nil {
		t.Fatal(err)
	}
	want := "presets (every site port-restricted-cone for IPv4):\n  A ipv6-firewall\n  B nat66-random\n\n" +
		"IPv6, what worked (predicted from both measured IPv6 profiles):\n" +
		"  A        B\nA udp+tcp  bday\nB bday     relay\n\n" +
		"IPv4, what worked: udp+tcp in every pair\n"
	if !strings.Contains(b.String(), want) {
		t.Errorf("text lacks\n%s\ngot:\n%s", want, b.String())
	}
	// One IPv4 cell differs (and mismatched): the IPv4 grid is drawn.
	r.Pairs[2].Techniques = []probe.TechniqueResult{row(natclass.DirectUDP, F), {Technique: natclass.DirectTCP, Predicted: S, Measured: F}}
	r.Pairs[2].Mismatches = []string{"tcp: predicted success, measured fail"}
	r.Pairs[1].IPv6 = nil
	b.Reset()
	if err := writeMatrix(&b, r); err != nil {
		t.Fatal(err)
	}
	if want := "IPv4, what worked:\n  A        B\nA udp+tcp  udp+tcp\nB udp+tcp  none!\n"; !strings.Contains(b.String(), want) ||
		!strings.Contains(b.String(), "\nB none     relay\n") {
		t.Errorf("text lacks\n%s\ngot:\n%s", want, b.String())
	}
}
