package cmd

import (
	"context"
	"errors"
	"os"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/natlab/natlab/tui"
)

// useTUI is the one TTY-or-plain decision: the TUI only on a terminal and
// only when no machine-readable output was asked for.
func useTUI(s IOStreams, out outputFlags, events bool) bool {
	return s.IsTTY && !out.JSON && !events
}

// runTUI shows the run on the terminal until the user quits and returns
// the last finished run's result. The TUI asks for reruns; run is called
// again for each.
func runTUI(ctx context.Context, s IOStreams, kind tui.Kind, title string, run tui.RunFunc) (tui.Result, error) {
	tui.ApplyColorEnv(os.Getenv)
	res, err := tui.Run(ctx, tui.Config{
		Model: tui.New(tui.Options{Kind: kind, Title: title}),
		Run:   run, In: s.In, Out: s.Out,
		// The alternate screen keeps the terminal's scrollback clean; the
		// caller prints the final report as text once the TUI is gone.
		ProgramOptions: []tea.ProgramOption{tea.WithAltScreen()},
	})
	if errors.Is(err, tui.ErrQuit) {
		return res, &ExitError{Code: ExitInternal, Err: err}
	}
	return res, err
}
