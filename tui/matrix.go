package tui

import (
	"fmt"
	"sort"
	"strings"

	"github.com/charmbracelet/bubbles/key"
	"github.com/charmbracelet/bubbles/progress"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"

	"github.com/natlab/natlab/lab"
	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/probe"
)

// matrixLegend explains the cells (natclass's short technique names; a
// test checks that it names every one), wrapped for 80 columns.
var matrixLegend = []string{
	"lan: same LAN · udp: hole punch · pred: port prediction · bday: birthday",
	"probing · pmap: port mapping · tcp: TCP simultaneous open · relay / rtcp:",
	"TURN over UDP / TCP · none: no path · !: measured ≠ predicted",
}

// matrixScreen is `natlab lab --matrix`: a grid of preset pairs to move
// around in, and one pair's details.
type matrixScreen struct {
	backend  string
	presets  []string
	excluded map[string]string
	pairs    map[[2]string]lab.MatrixPair
	elapsed  float64
	report   *lab.MatrixReport
	row, col int
	details  bool
}

func pairKey(a, b string) [2]string {
	if a > b {
		a, b = b, a
	}
	return [2]string{a, b}
}

func (s *matrixScreen) event(e probe.Event) {
	s.elapsed = e.Elapsed
	switch d := e.Data.(type) {
	case lab.MatrixPlan:
		s.backend, s.presets, s.excluded = d.Backend, d.Presets, d.Excluded
	case *lab.MatrixPair:
		if s.pairs == nil {
			s.pairs = map[[2]string]lab.MatrixPair{}
		}
		s.pairs[pairKey(d.A, d.B)] = *d
		// A preset the plan did not know (or no plan): grow the grid.
		for _, p := range []string{d.A, d.B} {
			if !contains(s.presets, p) {
				s.presets = append(s.presets, p)
			}
		}
	}
	s.clamp()
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

func (s *matrixScreen) done(r *lab.MatrixReport) {
	s.report, s.backend, s.presets, s.excluded = r, r.Backend, r.Presets, r.Excluded
	s.pairs = map[[2]string]lab.MatrixPair{}
	for _, p := range r.Pairs {
		s.pairs[pairKey(p.A, p.B)] = p
	}
	s.elapsed = r.DurationMillis
	s.clamp()
}

func (s *matrixScreen) clamp() {
	n := len(s.presets)
	s.row, s.col = min(max(s.row, 0), max(n-1, 0)), min(max(s.col, 0), max(n-1, 0))
}

func (s *matrixScreen) key(msg tea.KeyMsg, k keyMap) {
	switch {
	case key.Matches(msg, k.Up):
		s.row--
	case key.Matches(msg, k.Down):
		s.row++
	case key.Matches(msg, k.Left):
		s.col--
	case key.Matches(msg, k.Right):
		s.col++
	case key.Matches(msg, k.Open):
		s.details = len(s.presets) > 0
	case key.Matches(msg, k.Back):
		s.details = false
	}
	s.clamp()
}

func (s *matrixScreen) total() int {
	n := len(s.presets)
	return n * (n + 1) / 2
}

// cell is the grid's word for a pair.
func cell(p lab.MatrixPair, ok bool) string {
	switch {
	case !ok:
		return "·"
	case p.Error != "":
		return "error"
	}
	c := "none" // neither a direct path nor a relay
	if t := p.Verdict.Technique; t != "" {
		c = t.Short()
	}
	if len(p.Mismatches) > 0 {
		c += "!"
	}
	return c
}

func (s *matrixScreen) selected() (a, b string, p lab.MatrixPair, ok bool) {
	if len(s.presets) == 0 {
		return "", "", p, false
	}
	a, b = s.presets[s.row], s.presets[s.col]
	p, ok = s.pairs[pairKey(a, b)]
	return a, b, p, ok
}

func letter(i int) string { return string(rune('A' + i)) }

func (s *matrixScreen) view(v view) string {
	if s.details {
		return s.detailsView(v)
	}
	title := v.title
	if s.backend != "" {
		title += " · " + s.backend
	}
	out := []string{titleStyle.Render(title)}
	done, total := len(s.pairs), s.total()
	status := fmt.Sprintf("%d/%d pairs · %.1f s", done, total, s.elapsed/1000)
	bar := progress.New(progress.WithoutPercentage(), progress.WithWidth(max(v.width-len(status)-4, 10)), progress.WithSolidFill("6"))
	frac := 0.0
	if total > 0 {
		frac = float64(done) / float64(total)
	}
	lead := v.spin
	if !v.running {
		lead = okStyle.Render("✓")
		if v.err != nil {
			lead = failStyle.Render("✗")
		}
	}
	out = append(out, lead+" "+bar.ViewAs(frac)+" "+status, "")
	out = append(out, s.grid(v)...)
	out = append(out, "")
	for _, l := range matrixLegend {
		out = append(out, dimStyle.Render(l))
	}
	out = append(out, s.excludedLines(v)...)
	out = append(out, "")
	if a, b, p, ok := s.selected(); a != "" {
		line := fmt.Sprintf("%s × %s: ", a, b)
		if ok {
			line += p.Verdict.Summary
		} else {
			line += "running…"
		}
		out = append(out, "▸ "+line)
	}
	switch r := s.report; {
	case v.err != nil:
		out = append(out, banner(bannerFail, "error: "+v.err.Error(), v.width))
	case r != nil && r.Match:
		out = append(out, banner(bannerOK, fmt.Sprintf("Every measured outcome equals its prediction (%d pairs, %.1f s)", len(r.Pairs), r.DurationMillis/1000), v.width))
	case r != nil:
		out = append(out, banner(bannerFail, fmt.Sprintf("MISMATCH: some measured outcomes differ from their predictions (%d pairs)", len(r.Pairs)), v.width))
	}
	return strings.Join(out, "\n")
}

// grid is the matrix: row labels "A preset", column headers by letter,
// each cell wide enough for "[relay!]": eight presets and their names fit
// 80 columns.
func (s *matrixScreen) grid(v view) []string {
	n := len(s.presets)
	const cellW = 8
	labelW := 4
	for _, p := range s.presets {
		labelW = max(labelW, len(p)+3)
	}
	labelW = min(labelW, max(v.width-n*cellW, 6))
	head := pad("", labelW)
	for i := range n {
		head += pad(" "+letter(i), cellW)
	}
	out := []string{headerStyle.Render(strings.TrimRight(head, " "))}
	for i, a := range s.presets {
		line := pad(truncate(letter(i)+" "+a, labelW-1), labelW)
		for j, b := range s.presets {
			p, ok := s.pairs[pairKey(a, b)]
			c := cell(p, ok)
			if i == s.row && j == s.col {
				line += pad(cursorStyle.Render("["+c+"]"), cellW)
				continue
			}
			line += pad(" "+cellStyle(p, ok, c).Render(c), cellW)
		}
		out = append(out, strings.TrimRight(line, " "))
	}
	return out
}

func cellStyle(p lab.MatrixPair, ok bool, c string) lipgloss.Style {
	switch {
	case !ok:
		return dimStyle
	case p.Error != "" || strings.HasSuffix(c, "!"):
		return failStyle
	case p.Verdict.Technique.IsRelay():
		return warnStyle
	case c == "none":
		return failStyle
	}
	return outcomeStyle("success")
}

// excludedLines name the presets left out; those left out for the same
// reason share one line, wrapped, not cut: the reason ends with what to
// do about it.
func (s *matrixScreen) excludedLines(v view) []string {
	byWhy := map[string][]string{}
	for p, why := range s.excluded {
		byWhy[why] = append(byWhy[why], p)
	}
	var ex []string
	for why, ps := range byWhy {
		sort.Strings(ps)
		ex = append(ex, strings.Join(ps, ", ")+": "+why)
	}
	sort.Strings(ex)
	var out []string
	for _, e := range ex {
		out = append(out, strings.Split(dimStyle.Width(max(v.width, 20)).Render("not in the matrix: "+e), "\n")...)
	}
	return out
}

// detailsView is one pair: its verdict, then every technique with the
// prediction, the measurement, the attempts and why.
func (s *matrixScreen) detailsView(v view) string {
	a, b, p, ok := s.selected()
	out := []string{titleStyle.Render(fmt.Sprintf("%s × %s", a, b))}
	if !ok {
		line := "this pair has not finished yet"
		if v.running {
			line = v.spin + " " + line
		}
		return strings.Join(append(out, "", line), "\n")
	}
	switch {
	case p.Error != "":
		out = append(out, banner(bannerFail, "error: "+p.Error, v.width))
	case p.Verdict.Technique != "":
		out = append(out, banner(bannerOK, p.Verdict.Summary, v.width))
	default:
		out = append(out, banner(bannerRelay, p.Verdict.Summary, v.width))
	}
	// An IPv6 matrix's cell has the IPv6 rows too, after IPv4's, named
	// "<technique> v6", with one line of why each so both fit.
	type row struct {
		name string
		probe.TechniqueResult
	}
	var rows []row
	for _, t := range p.Techniques {
		rows = append(rows, row{string(t.Technique), t})
	}
	w, whyLines := 14, 2
	for _, t := range p.IPv6 {
		rows = append(rows, row{string(t.Technique) + " v6", t})
		w, whyLines = 17, 1
	}
	out = append(out, headerStyle.Render(fmt.Sprintf("%-*s %-10s %-10s %8s %10s %10s", w, "technique", "predicted", "measured", "attempts", "first pkt", "rtt")))
	for _, t := range rows {
		first, rtt := "", ""
		if t.Measured == natclass.Success {
			first, rtt = fmt.Sprintf("%.1f ms", t.TimeToFirstPacketMillis), fmt.Sprintf("%.2f ms", t.RTTMillis)
		}
		mark := ""
		if t.Measured != t.Predicted {
			mark = failStyle.Render(" ≠")
		}
		out = append(out, strings.TrimRight(fmt.Sprintf("%-*s %-10s %s %8d %10s %10s", w, t.name, t.Predicted,
			outcomeStyle(string(t.Measured)).Render(pad(string(t.Measured), 10)), t.Attempts, first, rtt), " ")+mark)
		why := t.Reason
		if t.Error != "" && t.Measured != t.Predicted {
			why = t.Error
		}
		// Wrapped to two lines at most (one with IPv6 rows): the reason
		// is the point of this screen, but every technique must still
		// fit 24 rows.
		wrapped := strings.Split(dimStyle.Width(max(v.width-2, 20)).Render("why: "+why), "\n")
		if len(wrapped) > whyLines {
			wrapped = wrapped[:whyLines]
			wrapped[whyLines-1] = truncate(strings.TrimRight(wrapped[whyLines-1], " ")+" …", v.width-2)
		}
		for _, l := range wrapped {
			out = append(out, "  "+l)
		}
	}
	return strings.Join(out, "\n")
}
