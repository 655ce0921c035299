// Package cmd holds natlab's cobra commands. Each command parses its flags
// into an options struct and calls a library function; views (JSON, plain
// text, TUI) are chosen here and nowhere below.
package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/mattn/go-isatty"
	"github.com/spf13/cobra"

	"github.com/natlab/natlab/internal/buildinfo"
)

// Exit codes, documented in the README.
const (
	ExitOK       = 0
	ExitInternal = 1
	ExitUsage    = 2
	// ExitCancelled is the user stopping a run: q in the TUI, Ctrl-C or
	// SIGTERM (128 + SIGINT, as shells report an interrupted program).
	ExitCancelled = 130
)

// IOStreams are the command's standard streams; tests replace them.
type IOStreams struct {
	In     io.Reader
	Out    io.Writer
	ErrOut io.Writer
	// IsTTY reports whether Out is a terminal: human styling and the TUI
	// only then, plain text otherwise.
	IsTTY bool
}

// SystemStreams are the process's own streams.
func SystemStreams() IOStreams {
	return IOStreams{
		In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr,
		IsTTY: isatty.IsTerminal(os.Stdout.Fd()) || isatty.IsCygwinTerminal(os.Stdout.Fd()),
	}
}

// FlagError is a usage mistake: the root prints it with a hint and exits 2.
type FlagError struct{ err error }

func (e *FlagError) Error() string { return e.err.Error() }
func (e *FlagError) Unwrap() error { return e.err }

// flagErrorf returns a FlagError.
func flagErrorf(format string, args ...any) error {
	return &FlagError{fmt.Errorf(format, args...)}
}

// NewRootCmd builds the natlab command tree.
func NewRootCmd(s IOStreams) *cobra.Command {
	root := &cobra.Command{
		Use:   "natlab",
		Short: "NAT traversal lab and diagnostic tool",
		Long: `natlab tells whether two hosts behind NATs can talk directly (UDP, TCP, which
technique, how fast) or need a relay, and reproduces every NAT behaviour in a lab.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(s.Out)
	root.SetErr(s.ErrOut)
	root.SetIn(s.In)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &FlagError{err} })
	// --version prints what `natlab version` prints.
	root.Version = buildinfo.Version()
	var version strings.Builder
	_ = writeVersion(&version, buildinfo.Get())
	root.SetVersionTemplate(version.String())
	root.AddCommand(subcommands(s)...)
	return root
}

// subcommandFns register the subcommands; each command's file appends its
// constructor in an init function, so adding a command touches one file.
var subcommandFns []func(IOStreams) *cobra.Command

func subcommands(s IOStreams) []*cobra.Command {
	var cmds []*cobra.Command
	for _, f := range subcommandFns {
		cmds = append(cmds, f(s))
	}
	return cmds
}

// Main runs natlab with args and returns the process exit code.
func Main(args []string, s IOStreams) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	out := &countingWriter{w: s.Out}
	if !s.IsTTY {
		// A terminal stays the *os.File the TUI measures; the error
		// document is for scripts, which read a pipe.
		s.Out = out
	}
	root := NewRootCmd(s)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	var ee *ExitError
	if err != nil && ctx.Err() != nil && !errors.As(err, &ee) {
		// Interrupted: whatever was cut short, it is not an error.
		err = &ExitError{Code: ExitCancelled, Err: errors.New("interrupted")}
	}
	code, msg := exitOf(cmd, err, s)
	if code != ExitOK && msg != "" && cmd != nil && !s.IsTTY {
		// A script reading --json or --events gets a last document even
		// when the command failed: --events ends its stream with it,
		// --json prints it when nothing else was written.
		writeErrorDocument(cmd, out, msg, code, out.n == 0)
	}
	return code
}

// exitOf prints err (and, for a usage error, where the help is) and
// returns the exit code and the message printed.
func exitOf(cmd *cobra.Command, err error, s IOStreams) (int, string) {
	if err == nil {
		return ExitOK, ""
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		if ee.Err == nil {
			return ee.Code, ""
		}
		fmt.Fprintln(s.ErrOut, "natlab:", ee.Err)
		return ee.Code, ee.Err.Error()
	}
	fmt.Fprintln(s.ErrOut, "natlab:", err)
	var fe *FlagError
	if errors.As(err, &fe) || isCobraUsageError(err) {
		// The help of the command that was being run, where the flag is.
		fmt.Fprintf(s.ErrOut, "Run '%s --help' for usage.\n", cmd.CommandPath())
		return ExitUsage, err.Error()
	}
	return ExitInternal, err.Error()
}

// ErrorSchema versions the document a failed command prints with --json
// or --events.
const ErrorSchema = "natlab.error/v1"

// errorDocument is what a command run with --json or --events prints on
// stdout when it fails before writing its own document.
type errorDocument struct {
	Schema        string `json:"schema"` // ErrorSchema
	NatlabVersion string `json:"natlab_version"`
	Command       string `json:"command"`   // "natlab check"
	Error         string `json:"error"`     // the message also printed on stderr
	ExitCode      int    `json:"exit_code"` // the process's exit status
}

func writeErrorDocument(cmd *cobra.Command, w io.Writer, msg string, code int, nothingWritten bool) {
	flagSet := func(name string) bool {
		f := cmd.Flags().Lookup(name)
		return f != nil && f.Value.String() == "true"
	}
	doc := errorDocument{Schema: ErrorSchema, NatlabVersion: buildinfo.Version(), Command: cmd.CommandPath(), Error: msg, ExitCode: code}
	switch {
	case flagSet("events"):
		_ = writeJSONLine(w, doc)
	case flagSet("json") && nothingWritten:
		_ = writeJSON(w, doc)
	}
}

// countingWriter counts what a command wrote to stdout.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// ExitError carries a specific exit code (for example "relay required")
// out of a command; Err, if set, is printed.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit status %d", e.Code)
	}
	return e.Err.Error()
}
func (e *ExitError) Unwrap() error { return e.Err }

// isCobraUsageError recognises cobra's own argument errors, which it does
// not route through the flag error function.
func isCobraUsageError(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown command", "accepts ", "requires at least", "requires at most", "invalid argument"} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}
