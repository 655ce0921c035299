package tui

import (
	"github.com/charmbracelet/lipgloss"
	"github.com/muesli/termenv"
)

// Every style of the TUI lives here, so a colour change touches one file.
// Nothing may carry meaning by colour alone: with NO_COLOR (Ascii profile)
// the same screen must still say which cell is selected and what failed,
// so selection uses brackets and outcomes use words and ✓/✗.
var (
	titleStyle   = lipgloss.NewStyle().Bold(true)
	dimStyle     = lipgloss.NewStyle().Foreground(lipgloss.AdaptiveColor{Light: "245", Dark: "243"})
	headerStyle  = lipgloss.NewStyle().Bold(true).Underline(true)
	okStyle      = lipgloss.NewStyle().Foreground(lipgloss.Color("2"))
	failStyle    = lipgloss.NewStyle().Foreground(lipgloss.Color("1"))
	warnStyle    = lipgloss.NewStyle().Foreground(lipgloss.Color("3"))
	spinnerStyle = lipgloss.NewStyle().Foreground(lipgloss.Color("6"))
	cursorStyle  = lipgloss.NewStyle().Reverse(true).Bold(true)
	directBar    = lipgloss.NewStyle().Foreground(lipgloss.Color("2"))
	relayBar     = lipgloss.NewStyle().Foreground(lipgloss.Color("3"))

	// Banners: the verdict a person reads first, boxed so that it stands
	// out without colour too.
	bannerBase    = lipgloss.NewStyle().Border(lipgloss.RoundedBorder()).Padding(0, 1).Bold(true)
	bannerOK      = bannerBase.BorderForeground(lipgloss.Color("2")).Foreground(lipgloss.Color("2"))
	bannerRelay   = bannerBase.BorderForeground(lipgloss.Color("3")).Foreground(lipgloss.Color("3"))
	bannerFail    = bannerBase.BorderForeground(lipgloss.Color("1")).Foreground(lipgloss.Color("1"))
	bannerNeutral = bannerBase
)

// outcomeStyle colours a technique outcome.
func outcomeStyle(o string) lipgloss.Style {
	switch o {
	case "success":
		return okStyle
	case "fail":
		return failStyle
	}
	return dimStyle
}

// ApplyColorEnv honours NO_COLOR (https://no-color.org): any non-empty
// value turns every style into plain text. getenv is os.Getenv outside
// tests.
func ApplyColorEnv(getenv func(string) string) {
	if getenv("NO_COLOR") != "" {
		lipgloss.SetColorProfile(termenv.Ascii)
	}
}
