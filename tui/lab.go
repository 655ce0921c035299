package tui

import (
	"fmt"
	"strings"

	"github.com/natlab/natlab/lab"
	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/probe"
)

// labScreen is the state of `natlab lab`'s screen: the sites as planned,
// then as measured.
type labScreen struct {
	plan    *lab.Plan
	last    string
	elapsed float64
	report  *lab.Report
}

func (s *labScreen) event(e probe.Event) {
	s.last, s.elapsed = e.Message, e.Elapsed
	if p, ok := e.Data.(lab.Plan); ok {
		s.plan = &p
	}
}

func (s *labScreen) done(r *lab.Report) { s.report = r }

func (s *labScreen) view(v view) string {
	out := []string{titleStyle.Render(v.title)}
	var sites []lab.Site
	switch {
	case s.report != nil:
		sites = s.report.Sites
		out = append(out, okStyle.Render("✓")+" lab built, every site profiled, lab torn down · STUN server "+strings.Join(s.report.Server, " "))
	case v.err != nil:
		out = append(out, failStyle.Render("✗")+" "+s.last)
	default:
		if s.plan != nil {
			sites = s.plan.Sites
		}
		line := "building the lab and profiling each site"
		if s.last != "" {
			line = s.last
		}
		out = append(out, v.spin+" "+line)
	}
	out = append(out, "")
	var cols [][]string
	for _, site := range sites {
		cols = append(cols, siteColumn(site, s.report != nil))
	}
	if len(cols) > 0 {
		out = append(out, columns((v.width-2*(len(cols)-1))/len(cols), cols...)...)
	}
	if r := s.report; r != nil {
		var notes []string
		for _, site := range r.Sites {
			for _, m := range site.Mismatches {
				notes = append(notes, failStyle.Render("✗")+" site "+site.Name+": "+m)
			}
			if site.Error != "" {
				notes = append(notes, failStyle.Render("✗")+" site "+site.Name+": "+site.Error)
			}
		}
		if len(notes) > 0 {
			out = append(out, "")
			out = append(out, notes...)
		}
	}
	out = append(out, "")
	switch r := s.report; {
	case v.err != nil:
		out = append(out, banner(bannerFail, "error: "+v.err.Error(), v.width))
	case r != nil && r.Match:
		out = append(out, banner(bannerOK, fmt.Sprintf("Every profile matches its preset (%.0f ms)", r.DurationMillis), v.width))
	case r != nil:
		out = append(out, banner(bannerFail, fmt.Sprintf("MISMATCH: natlab's profile differs from the preset (%.0f ms)", r.DurationMillis), v.width))
	}
	return strings.Join(out, "\n")
}

// siteColumn is one site: what was measured, or while measuring, what the
// preset should give.
func siteColumn(s lab.Site, finished bool) []string {
	head := "site " + s.Name
	if s.Preset != "" {
		head += " · " + s.Preset
	}
	col := []string{headerStyle.Render(head)}
	row := func(k, v string) { col = append(col, fmt.Sprintf("%-10s %s", k, v)) }
	e := s.Expected
	switch p := s.Profile; {
	case p != nil:
		mark := okStyle.Render("✓ as preset")
		if len(s.Mismatches) > 0 {
			mark = failStyle.Render(fmt.Sprintf("✗ %d mismatch(es)", len(s.Mismatches)))
		}
		pa, step := natclass.Allocation(""), 0
		if p.PortAllocation != nil {
			pa, step = p.PortAllocation.Pattern, p.PortAllocation.Step
		}
		row("nat type", titleStyle.Render(string(p.NATType)))
		row("mapping", p.Mapping.Abbrev("M"))
		row("filtering", p.Filtering.Abbrev("F"))
		row("ports", strings.TrimPrefix(ports(pa, step), "ports "))
		row("hairpin", p.Hairpinning.String())
		row("tcp", p.TCP.Brief())
		row("mapped", orDash(p.MappedAddress))
		row("rtt", fmt.Sprintf("%.1f ms", p.RTTMillis))
		col = append(col, mark)
	case finished || s.Error != "":
		col = append(col, failStyle.Render("✗ "+orDash(s.Error)))
	default:
		col = append(col, dimStyle.Render("profiling; the preset should give:"))
		row("nat type", string(e.NATType))
		row("mapping", e.Mapping.Abbrev("M"))
		row("filtering", e.Filtering.Abbrev("F"))
		row("ports", orDash(string(e.Allocation)))
		row("hairpin", e.Hairpinning.String())
	}
	return col
}
