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
	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/probe"
	"github.com/natlab/natlab/testnet"
	"github.com/natlab/natlab/tui"
)

func runMatrix(ctx context.Context, o *LabOptions, backend testnet.Backend) error {
	rep, err := show(ctx, o.IO, o.Output, view[*lab.MatrixReport]{
		kind: tui.KindMatrix, title: "natlab lab --matrix",
		run: func(ctx context.Context, emit func(probe.Event)) (*lab.MatrixReport, error) {
			return lab.RunMatrix(ctx, lab.MatrixOptions{Backend: backend, Segment: o.Segment, Presets: o.MatrixPresets, IPv6: o.IPv6, Events: emit})
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
	if r.IPv6 {
		fmt.Fprintf(w, "natlab lab --matrix --ipv6 (%s): what works directly, per pair\n\n", where)
	} else {
		fmt.Fprintf(w, "natlab lab --matrix (%s): the technique a real application should use, per pair\n\n", where)
	}
	best := func(c *lab.MatrixPair) (string, bool) { return c.Best().Short(), len(c.Mismatches) > 0 }
	if !r.IPv6 {
		if err := writeGrid(w, r, true, best); err != nil {
			return err
		}
	} else if err := writeGrids6(w, r); err != nil {
		return err
	}
	fmt.Fprintf(w, "\n%s\n", strings.Join(matrixLegend, "\n"))
	var ex []string
	for p := range r.Excluded {
		ex = append(ex, p)
	}
	sort.Strings(ex)
	if len(ex) > 0 {
		fmt.Fprintf(w, "\nnot in this matrix:\n")
	}
	for _, p := range ex {
		writeWrapped(w, "  "+p+": ", r.Excluded[p])
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

// writeGrids6 is the IPv6 matrix's text: the presets' letters, then two
// grids of the same pairs, each cell what worked: the IPv6 rows, then
// the IPv4 ones (one line when every pair is alike: every site's IPv4
// side is the same NAT). Rows carry letters only, so seven presets fit
// in 80 columns.
func writeGrids6(w io.Writer, r *lab.MatrixReport) error {
	fmt.Fprintf(w, "presets (every site %s for IPv4):\n", defaultNATA)
	for i, p := range r.Presets {
		fmt.Fprintf(w, "  %c %s\n", 'A'+i, p)
	}
	fmt.Fprintln(w, "\nIPv6, what worked (predicted from both measured IPv6 profiles):")
	if err := writeGrid(w, r, false, func(c *lab.MatrixPair) (string, bool) { return worked(c.IPv6), mismatched(c, true) }); err != nil {
		return err
	}
	v4 := func(c *lab.MatrixPair) (string, bool) { return worked(c.Techniques), mismatched(c, false) }
	if same, ok := uniform(r, v4); ok {
		fmt.Fprintf(w, "\nIPv4, what worked: %s in every pair\n", same)
	} else {
		fmt.Fprintln(w, "\nIPv4, what worked:")
		if err := writeGrid(w, r, false, v4); err != nil {
			return err
		}
	}
	fmt.Fprintln(w, relayLine(r))
	return nil
}

// uniform returns the one cell every pair has, if they all have the same
// one and none mismatched or failed.
func uniform(r *lab.MatrixReport, cellOf func(*lab.MatrixPair) (string, bool)) (string, bool) {
	var same string
	for i := range r.Pairs {
		c := &r.Pairs[i]
		what, bad := cellOf(c)
		if bad || c.Error != "" || what == "" || (i > 0 && what != same) {
			return "", false
		}
		same = what
	}
	return same, len(r.Pairs) > 0
}

// writeGrid is the matrix's grid: each cell what cellOf says of the
// pair ("none" when it says nothing), "!" when it mismatched. Rows are
// labelled with the letter and, with names, the preset; without names
// the letter is no column of its own and the last cell has no padding,
// so eight presets' IPv6 cells fit in 80 columns.
func writeGrid(w io.Writer, r *lab.MatrixReport, names bool, cellOf func(*lab.MatrixPair) (string, bool)) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	sep := func(j int) string {
		if !names && j == len(r.Presets)-1 {
			return ""
		}
		return "\t"
	}
	if names {
		fmt.Fprint(tw, "\t")
	} else {
		fmt.Fprint(tw, "  ")
	}
	for i := range r.Presets {
		fmt.Fprintf(tw, "%c%s", 'A'+i, sep(i))
	}
	fmt.Fprintln(tw)
	for i, a := range r.Presets {
		if names {
			fmt.Fprintf(tw, "%c %s\t", 'A'+i, a)
		} else {
			fmt.Fprintf(tw, "%c ", 'A'+i)
		}
		for j, b := range r.Presets {
			fmt.Fprintf(tw, "%s%s", gridCell(r.Cell(a, b), cellOf), sep(j))
		}
		fmt.Fprintln(tw)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write matrix: %w", err)
	}
	return nil
}

// gridCell is one cell of the grid: what cellOf says of the pair, "none"
// when it says nothing, "error", or "?" without the pair; "!" marks a
// mismatch.
func gridCell(c *lab.MatrixPair, cellOf func(*lab.MatrixPair) (string, bool)) string {
	if c == nil {
		return "?"
	}
	what, bad := cellOf(c)
	cell := what
	switch {
	case c.Error != "":
		cell = "error"
	case what == "":
		cell = "none"
	}
	if bad {
		cell += "!"
	}
	return cell
}

// worked is every direct technique that worked, short names joined by
// "+" in order of preference, or, when none did, the relay that worked
// ("" when nothing did): a relay beside a direct path adds nothing to
// read and would widen every cell.
func worked(ts []probe.TechniqueResult) string {
	var direct, relay []string
	for _, t := range ts {
		switch {
		case t.Measured != natclass.Success:
		case t.Technique.IsRelay():
			relay = append(relay, t.Technique.Short())
		default:
			direct = append(direct, t.Technique.Short())
		}
	}
	if len(direct) == 0 {
		return strings.Join(relay, "+")
	}
	return strings.Join(direct, "+")
}

// mismatched reports whether a cell's IPv6 rows (or its IPv4 ones)
// differ from their predictions.
func mismatched(c *lab.MatrixPair, six bool) bool {
	for _, m := range c.Mismatches {
		if strings.HasPrefix(m, "ipv6 ") == six {
			return true
		}
	}
	return false
}

// relayLine says in how many pairs the TURN relay worked, over IPv4 and
// over IPv6, which the grids leave out where a direct technique worked,
// to fit 80 columns.
func relayLine(r *lab.MatrixReport) string {
	n4, n6 := 0, 0
	for _, p := range r.Pairs {
		if relayWorked(p.Techniques) {
			n4++
		}
		if relayWorked(p.IPv6) {
			n6++
		}
	}
	return fmt.Sprintf("the TURN relay worked in %d of %d pairs, over IPv6 in %d", n4, len(r.Pairs), n6)
}

// relayWorked reports whether a relay row of ts succeeded.
func relayWorked(ts []probe.TechniqueResult) bool {
	for _, t := range ts {
		if t.Technique.IsRelay() && t.Measured == natclass.Success {
			return true
		}
	}
	return false
}
