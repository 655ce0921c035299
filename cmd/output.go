package cmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/spf13/cobra"

	"github.com/natlab/natlab/probe"
	"github.com/natlab/natlab/tui"
)

// outputFlags are shared by every command: one helper so that --json and
// --events mean the same everywhere.
type outputFlags struct {
	JSON bool
	// Events streams progress as JSON lines, the report last; only on
	// commands that have progress (addEventsFlag).
	Events bool
}

func addOutputFlags(c *cobra.Command, o *outputFlags) {
	c.Flags().BoolVar(&o.JSON, "json", false, "print one JSON document (versioned by its \"schema\" field) instead of text")
}

func addEventsFlag(c *cobra.Command, o *outputFlags) {
	c.Flags().BoolVar(&o.Events, "events", false, "print progress events as JSON lines, then the report as the last line")
}

// useTUI is the one TTY-or-plain decision: the TUI only on a terminal and
// only when no machine-readable output was asked for.
func useTUI(s IOStreams, out outputFlags) bool {
	return s.IsTTY && !out.JSON && !out.Events
}

// view says how one command's run is shown; show picks among its forms.
type view[R comparable] struct {
	kind  tui.Kind
	title string
	// run is the library call; emit receives its progress (never nil).
	run func(ctx context.Context, emit func(probe.Event)) (R, error)
	// toTUI and fromTUI move the report in and out of tui.Result.
	toTUI   func(R) tui.Result
	fromTUI func(tui.Result) R
	// text prints the report for people.
	text func(io.Writer, R) error
	// progress is the line plain text prints on stderr for an event, ""
	// for none; nil prints no progress.
	progress func(probe.Event) string
}

// show runs v in the one view the flags and the terminal ask for: the TUI
// (then the report as text, so it stays on the terminal), --events (JSON
// lines, the report last), --json, or plain text (progress on stderr, the
// report on stdout). It returns the report, or the zero R with the error.
func show[R comparable](ctx context.Context, s IOStreams, out outputFlags, v view[R]) (R, error) {
	var zero R
	if useTUI(s, out) {
		res, err := runTUI(ctx, s, v.kind, v.title, func(ctx context.Context, emit func(probe.Event)) (tui.Result, error) {
			r, err := v.run(ctx, emit)
			return v.toTUI(r), err
		})
		r := v.fromTUI(res)
		if r == zero {
			return zero, err
		}
		return r, v.text(s.Out, r)
	}
	emit := func(probe.Event) {}
	switch {
	case out.Events:
		emit = eventWriter(s.Out)
	case !out.JSON && v.progress != nil:
		var mu sync.Mutex
		emit = func(e probe.Event) {
			if line := v.progress(e); line != "" {
				mu.Lock()
				defer mu.Unlock()
				fmt.Fprintf(s.ErrOut, "%7.0f ms  %s\n", e.Elapsed, line)
			}
		}
	}
	r, err := v.run(ctx, emit)
	if err != nil {
		return zero, err
	}
	switch {
	case out.Events:
		err = writeJSONLine(s.Out, r)
	case out.JSON:
		err = writeJSON(s.Out, r)
	default:
		err = v.text(s.Out, r)
	}
	return r, err
}

// report prints the document of a command without progress: JSON with
// --json, else text (show does the same for commands with progress).
func report(w io.Writer, out outputFlags, doc any, text func(io.Writer) error) error {
	if out.JSON {
		return writeJSON(w, doc)
	}
	return text(w)
}

// eventWriter prints events as JSON lines; events may come from several
// goroutines.
func eventWriter(w io.Writer) func(probe.Event) {
	var mu sync.Mutex
	return func(e probe.Event) {
		mu.Lock()
		defer mu.Unlock()
		_ = writeJSONLine(w, e)
	}
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
		// The user's choice, not a failure: said as an interrupt is.
		return res, &ExitError{Code: ExitCancelled, Err: errors.New("stopped before the run finished (q)")}
	}
	return res, err
}

// writeJSON prints v as indented JSON followed by a newline.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("encode JSON: %w", err)
	}
	return nil
}

// writeJSONLine prints v as one line of JSON (for event streams).
func writeJSONLine(w io.Writer, v any) error {
	if err := json.NewEncoder(w).Encode(v); err != nil {
		return fmt.Errorf("encode JSON: %w", err)
	}
	return nil
}
