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
