package cmd

import (
	"regexp"
	"strings"
	"testing"

	"github.com/natlab/natlab/natclass"
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
