package tui

import (
	"os"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"
	"github.com/charmbracelet/x/exp/golden"
	"github.com/charmbracelet/x/exp/teatest"
	"github.com/muesli/termenv"

	"github.com/natlab/natlab/lab"
)

// Golden screens at 80×24 with the Ascii profile (what NO_COLOR gives),
// escape codes stripped, so the files read as what a person sees.
// Regenerate with: go test ./tui/ -run TestGolden -update

func TestMain(m *testing.M) {
	lipgloss.SetColorProfile(termenv.Ascii)
	os.Exit(m.Run())
}

// screen drives a model through msgs with teatest and returns the final
// screen.
func screen(t *testing.T, o Options, msgs ...tea.Msg) string {
	t.Helper()
	o.Static = true
	tm := teatest.NewTestModel(t, New(o), teatest.WithInitialTermSize(80, 24))
	for _, m := range msgs {
		tm.Send(m)
	}
	tm.Send(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("q")})
	fm := tm.FinalModel(t, teatest.WithFinalTimeout(5*time.Second))
	return ansi.Strip(fm.View()) + "\n"
}

func keyMsg(s string) tea.Msg {
	switch s {
	case "up":
		return tea.KeyMsg{Type: tea.KeyUp}
	case "down":
		return tea.KeyMsg{Type: tea.KeyDown}
	case "left":
		return tea.KeyMsg{Type: tea.KeyLeft}
	case "right":
		return tea.KeyMsg{Type: tea.KeyRight}
	case "enter":
		return tea.KeyMsg{Type: tea.KeyEnter}
	case "esc":
		return tea.KeyMsg{Type: tea.KeyEsc}
	}
	return tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(s)}
}

func TestGolden(t *testing.T) {
	probeOpts := Options{Kind: KindProbe, Title: "natlab probe · server 203.0.113.10:3478"}
	matrixOpts := Options{Kind: KindMatrix, Title: "natlab lab --matrix"}
	running := []tea.Msg{StartMsg{Run: 1}}
	for _, e := range probeEvents() {
		running = append(running, EventMsg{Run: 1, Event: e})
	}
	matrixDone := []tea.Msg{StartMsg{Run: 1},
		EventMsg{Run: 1, Event: ev("matrix", "matrix of 4 presets", 0, lab.MatrixPlan{Backend: "in-process", Presets: matrixPresets})},
		DoneMsg{Run: 1, Result: Result{Matrix: matrixReport()}}}

	pairing := []tea.Msg{StartMsg{Run: 1}}
	for _, e := range probeEvents()[:4] {
		pairing = append(pairing, EventMsg{Run: 1, Event: e})
	}
	cases := []struct {
		name string
		opts Options
		msgs []tea.Msg
	}{
		{"probe_pairing", probeOpts, pairing},
		{"probe_running", probeOpts, running},
		{"probe_verdict", probeOpts, append(append([]tea.Msg{}, running...), DoneMsg{Run: 1, Result: Result{Probe: probeReport()}})},
		{"matrix_running", matrixOpts, []tea.Msg{StartMsg{Run: 1},
			EventMsg{Run: 1, Event: ev("matrix", "matrix of 4 presets", 0, lab.MatrixPlan{Backend: "in-process", Presets: matrixPresets})},
			EventMsg{Run: 1, Event: ev("pair", "full-cone × symmetric: direct", 2100, &matrixReport().Pairs[2])}}},
		{"matrix", matrixOpts, append(append([]tea.Msg{}, matrixDone...), keyMsg("down"), keyMsg("right"), keyMsg("right"))},
		{"matrix_details", matrixOpts, append(append([]tea.Msg{}, matrixDone...), keyMsg("down"), keyMsg("right"), keyMsg("right"), keyMsg("enter"))},
		{"matrix_back", matrixOpts, append(append([]tea.Msg{}, matrixDone...), keyMsg("down"), keyMsg("enter"), keyMsg("esc"), keyMsg("down"))},
		{"lab", Options{Kind: KindLab, Title: "natlab lab"}, []tea.Msg{StartMsg{Run: 1}, DoneMsg{Run: 1, Result: Result{Lab: labReport()}}}},
		{"fleet", Options{Kind: KindFleet, Title: "natlab fleet · hosts.jsonl"}, []tea.Msg{StartMsg{Run: 1}, DoneMsg{Run: 1, Result: Result{Fleet: fleetReport(t)}}}},
		{"help", matrixOpts, append(append([]tea.Msg{}, matrixDone...), keyMsg("?"))},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := screen(t, c.opts, c.msgs...)
			golden.RequireEqual(t, []byte(out))
		})
	}
}
