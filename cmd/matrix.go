package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/natlab/natlab/lab"
	"github.com/natlab/natlab/probe"
	"github.com/natlab/natlab/testnet"
	"github.com/natlab/natlab/tui"
)

func runMatrix(ctx context.Context, o *LabOptions, backend testnet.Backend) error {
	rep, err := show(ctx, o.IO, o.Output, view[*lab.MatrixReport]{
		kind: tui.KindMatrix, title: "natlab lab --matrix",
		run: func(ctx context.Context, emit func(probe.Event)) (*lab.MatrixReport, error) {
			return lab.RunMatrix(ctx, lab.MatrixOptions{Backend: backend, Segment: o.Segment, Presets: o.MatrixPresets, Events: emit})
		},
		toTUI:   func(r *lab.MatrixReport) tui.Result { return tui.Result{Matrix: r} },
		fromTUI: func(r tui.Result) *lab.MatrixReport { return r.Matrix },
		text:    writeMatrix,
		progress: func(e probe.Event) string {
			if _, ok := e.Data.(*lab.MatrixPair); ok {
				return e.Message // one line per finished pair
			}
			return ""
		},
	})
	if err != nil {
		return err
	}
	if !rep.Match {
		return &ExitError{Code: ExitInternal, Err: errors.New("lab matrix: a measured outcome differs from its prediction (see above)")}
	}
	return nil
}

// matrixLegend explains the cells (natclass's short technique names; a
// test checks that it names every one).
var matrixLegend = []string{
	"lan: same LAN; udp: hole punch; pred: port prediction; bday: birthday probing;",
	"pmap: mapped port; tcp: TCP simultaneous open; relay: TURN over UDP;",
	"rtcp: TURN over TCP/TLS; none: no path; !: measured differs from predicted",
}

func writeMatrix(w io.Writer, r *lab.MatrixReport) error {
	where := r.Backend
	if r.Topology == string(testnet.Shared) {
		where += ", routers on one segment"
	}
	fmt.Fprintf(w, "natlab lab --matrix (%s): the technique a real application should use, per pair\n\n", where)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprint(tw, "\t")
	for i := range r.Presets {
		fmt.Fprintf(tw, "%c\t", 'A'+i)
	}
	fmt.Fprintln(tw)
	for i, a := range r.Presets {
		fmt.Fprintf(tw, "%c %s\t", 'A'+i, a)
		for _, b := range r.Presets {
			c := r.Cell(a, b)
			cell := "?"
			switch {
			case c == nil:
			case c.Error != "":
				cell = "error"
			case c.Best() == "":
				cell = "none"
			default:
				cell = c.Best().Short()
			}
			if c != nil && len(c.Mismatches) > 0 {
				cell += "!"
			}
			fmt.Fprintf(tw, "%s\t", cell)
		}
		fmt.Fprintln(tw)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write matrix: %w", err)
	}
	fmt.Fprintf(w, "\n%s\n", strings.Join(matrixLegend, "\n"))
	var ex []string
	for p, why := range r.Excluded {
		ex = append(ex, fmt.Sprintf("  %s: %s", p, why))
	}
	sort.Strings(ex)
	if len(ex) > 0 {
		fmt.Fprintf(w, "\nnot in this matrix:\n%s\n", strings.Join(ex, "\n"))
	}
	for _, p := range r.Pairs {
		for _, m := range p.Mismatches {
			fmt.Fprintf(w, "  %s × %s: %s\n", p.A, p.B, m)
		}
		if p.Error != "" {
			fmt.Fprintf(w, "  %s × %s: error: %s\n", p.A, p.B, p.Error)
		}
	}
	verdict := "every measured outcome equals its prediction"
	if !r.Match {
		verdict = "MISMATCH: some measured outcomes differ from their predictions"
	}
	fmt.Fprintf(w, "\n%s (%d pairs, %.1f s)\n", verdict, len(r.Pairs), r.DurationMillis/1000)
	return nil
}
