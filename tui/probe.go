package tui

import (
	"cmp"
	"fmt"
	"strings"

	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/probe"
	"github.com/natlab/natlab/rendezvous"
)

// The screen's stages, in order; "relay" is shown once the probe reaches
// it (a probe without a relay stage never does). Punching is the
// probe's technique stage.
const stagePunch probe.Stage = "punch"

var probeStages = []probe.Stage{probe.StageProfile, probe.StagePair, stagePunch, probe.StageRelay, probe.StageVerdict}

// probeScreen is the state of `natlab probe`'s screen, built from events
// and replaced by the report when the run ends.
type probeScreen struct {
	stage    probe.Stage // the stage in progress
	seen     map[probe.Stage]bool
	last     string // the latest event's message
	elapsed  float64
	side     string
	code     *probe.PairingCode
	self     *natclass.Profile
	peer     *natclass.Summary
	rows     []techRow
	verdict  *probe.Verdict
	relay    *probe.RelayReport // the report's relay stage, once finished
	finished bool
}

// techRow is one technique as far as the events have told; family is
// "ipv6" for the IPv6 plan's rows (shown after IPv4's).
type techRow struct {
	probe.TechniqueResult
	done   bool
	family string
}

// stageOf maps an event to the screen's stage: the relay techniques are
// the relay stage, the others punching.
func stageOf(e probe.Event, tech natclass.Technique) probe.Stage {
	switch {
	case e.Stage != probe.StageTechnique:
		return e.Stage
	case tech.IsRelay():
		return probe.StageRelay
	}
	return stagePunch
}

// techniqueOf is the technique row an event carries: its prediction when
// it starts, its result when done.
func techniqueOf(e probe.Event) (tr probe.TechniqueResult, done, ok bool) {
	switch d := e.Data.(type) {
	case probe.TechniqueResult:
		return d, true, true
	case *probe.TechniqueResult:
		if d != nil {
			return *d, true, true
		}
	case natclass.Prediction:
		return probe.TechniqueResult{Technique: d.Technique, Predicted: d.Outcome, Reason: d.Reason}, false, true
	}
	return probe.TechniqueResult{}, false, false
}

func (s *probeScreen) event(e probe.Event) {
	if s.seen == nil {
		s.seen = map[probe.Stage]bool{}
	}
	s.last, s.elapsed = e.Message, e.Elapsed
	if e.Side != "" {
		s.side = e.Side
	}
	var tech natclass.Technique
	switch d := e.Data.(type) {
	case probe.PairingCode:
		s.code = &d
	case *natclass.Profile:
		s.self = d
	case natclass.Summary:
		s.peer = &d
	case probe.Verdict:
		s.verdict = &d
	}
	if tr, done, ok := techniqueOf(e); ok {
		tech = tr.Technique
		s.setRow(tr, done, e.Family)
	}
	st := stageOf(e, tech)
	s.stage = st
	s.seen[st] = true
}

func (s *probeScreen) setRow(tr probe.TechniqueResult, done bool, family string) {
	for i := range s.rows {
		if s.rows[i].Technique == tr.Technique && s.rows[i].family == family {
			if !done && s.rows[i].Predicted != "" && tr.Predicted == "" {
				tr.Predicted = s.rows[i].Predicted
			}
			s.rows[i] = techRow{tr, done, family}
			return
		}
	}
	s.rows = append(s.rows, techRow{tr, done, family})
}

func (s *probeScreen) done(r *probe.Report) {
	s.finished = true
	s.side, s.self = r.Side, r.Self
	peer := r.Peer
	s.peer = &peer
	s.rows = nil
	for _, t := range r.Techniques {
		s.rows = append(s.rows, techRow{t, true, ""})
	}
	if r.IPv6 != nil {
		for _, t := range r.IPv6.Techniques {
			s.rows = append(s.rows, techRow{t, true, "ipv6"})
		}
	}
	v := r.Verdict
	s.verdict = &v
	s.relay = r.Relay
	s.stage = probe.StageVerdict
	if s.seen == nil {
		s.seen = map[probe.Stage]bool{}
	}
	for _, t := range r.Techniques {
		if t.Technique.IsRelay() {
			s.seen[probe.StageRelay] = true
		}
	}
	s.elapsed = r.DurationMillis
}

// stageLine is "✓ profile  ✓ pair  | punch 3  · verdict".
func (s *probeScreen) stageLine(v view) string {
	cur := -1
	for i, st := range probeStages {
		if st == s.stage {
			cur = i
		}
	}
	var parts []string
	for i, st := range probeStages {
		if st == "relay" && !s.seen["relay"] {
			continue
		}
		label := string(st)
		if st == "punch" && s.stage == "punch" && v.running {
			label = fmt.Sprintf("punch %d/%d", s.doneRows(), len(s.rows))
		}
		switch {
		case s.finished || i < cur:
			parts = append(parts, okStyle.Render("✓")+" "+label)
		case i == cur && v.err != nil:
			parts = append(parts, failStyle.Render("✗")+" "+label)
		case i == cur && v.running:
			parts = append(parts, v.spin+" "+label)
		default:
			parts = append(parts, dimStyle.Render("· "+label))
		}
	}
	return strings.Join(parts, "   ")
}

func (s *probeScreen) doneRows() int {
	n := 0
	for _, r := range s.rows {
		if r.done {
			n++
		}
	}
	return n
}

func (s *probeScreen) view(v view) string {
	var out []string
	title := v.title
	if s.side != "" {
		title += " · side " + s.side
	}
	out = append(out, titleStyle.Render(title))
	out = append(out, s.stageLine(v))
	if s.last != "" && !s.finished {
		out = append(out, dimStyle.Render(fmt.Sprintf("%7.0f ms  %s", s.elapsed, s.last)))
	}
	out = append(out, "")
	out = append(out, s.profiles(v)...)
	if s.peer == nil && s.code != nil && !s.finished {
		// The command on a line of its own, so that it is copied whole
		// (wrapping would break the code at a dash).
		lead, cmd := codeHint(*s.code)
		out = append(out, "", lead, titleStyle.Render(cmd))
	}
	out = append(out, "")
	out = append(out, s.table(v)...)
	if chart := s.chart(v.width); len(chart) > 0 {
		out = append(out, "")
		out = append(out, chart...)
	}
	switch {
	case v.err != nil:
		out = append(out, banner(bannerFail, "error: "+v.err.Error(), v.width))
	case s.verdict != nil && s.verdict.Direct:
		out = append(out, banner(bannerOK, s.verdict.Summary, v.width))
	case s.verdict != nil:
		out = append(out, banner(bannerRelay, s.verdict.Summary, v.width))
	}
	if v.dropped > 0 {
		out = append(out, warnStyle.Render(fmt.Sprintf("(the view fell behind: %d events skipped; the report above is complete)", v.dropped)))
	}
	return strings.Join(out, "\n")
}

// codeHint is what the person at the other host should run.
func codeHint(c probe.PairingCode) (lead, cmd string) {
	if c.Mode == rendezvous.Create {
		return "on the other host run:", "natlab probe --server " + c.Server + " --join " + c.Code
	}
	return "pairing code (pass --code on the other host too):", c.Code
}

// profiles puts this host's profile and the peer's side by side.
func (s *probeScreen) profiles(v view) []string {
	colW := (v.width - 2) / 2
	self := []string{headerStyle.Render("this host" + sideSuffix(s.side))}
	if p := s.self; p != nil {
		pa, step := natclass.Allocation(""), 0
		if p.PortAllocation != nil {
			pa, step = p.PortAllocation.Pattern, p.PortAllocation.Step
		}
		self = append(self, titleStyle.Render(string(p.NATType)),
			p.Mapping.Abbrev("M")+" · "+p.Filtering.Abbrev("F")+" · "+ports(pa, step),
			"mapped "+orDash(p.MappedAddress),
			"tcp "+p.TCP.Brief())
	} else {
		self = append(self, dimStyle.Render("profiling…"))
	}
	peer := []string{headerStyle.Render("peer" + sideSuffix(otherSide(s.side)))}
	switch p := s.peer; {
	case p != nil:
		peer = append(peer, titleStyle.Render(string(p.NATType)),
			p.Mapping.Abbrev("M")+" · "+p.Filtering.Abbrev("F")+" · "+ports(p.Allocation, p.Step),
			"mapped "+orDash(p.Mapped),
			"tcp "+p.TCPProfile.Brief())
	case s.code != nil:
		peer = append(peer, dimStyle.Render("waiting for the peer; code:"), titleStyle.Render(s.code.Code))
	default:
		peer = append(peer, dimStyle.Render("not paired yet"))
	}
	return columns(colW, self, peer)
}

func sideSuffix(side string) string {
	if side == "" {
		return ""
	}
	return " (" + side + ")"
}

func otherSide(side string) string {
	switch side {
	case "A":
		return "B"
	case "B":
		return "A"
	}
	return ""
}

// table lists the techniques tried so far.
func (s *probeScreen) table(v view) []string {
	w := 14 // the longest technique name, and two spaces
	for _, r := range s.rows {
		if r.family != "" {
			w = 17 // and " v6"
		}
	}
	out := []string{headerStyle.Render(fmt.Sprintf("%-*s %-10s %-10s %8s %10s %10s", w, "technique", "predicted", "measured", "attempts", "first pkt", "rtt"))}
	if len(s.rows) == 0 {
		return append(out, dimStyle.Render("no technique tried yet"))
	}
	for _, r := range s.rows {
		measured, attempts, first, rtt := string(r.Measured), "", "", ""
		if !r.done {
			measured = "trying"
			if v.running {
				measured = v.spin + " trying"
			}
		} else {
			attempts = fmt.Sprint(r.Attempts)
			if r.Measured == natclass.Success {
				first, rtt = fmt.Sprintf("%.1f ms", r.TimeToFirstPacketMillis), fmt.Sprintf("%.2f ms", r.RTTMillis)
			}
		}
		name := string(r.Technique)
		if r.family == "ipv6" {
			name += " v6"
		}
		line := strings.TrimRight(fmt.Sprintf("%-*s %-10s %s %8s %10s %10s", w, name, orDash(string(r.Predicted)),
			outcomeStyle(string(r.Measured)).Render(pad(measured, 10)), attempts, first, rtt), " ")
		if r.done && r.Predicted != "" && r.Measured != r.Predicted {
			line += failStyle.Render(" ≠") // the prediction was wrong: worth a look
		}
		out = append(out, line)
	}
	return out
}

// chart compares the direct path's round trip with the relay's, when the
// run measured both.
func (s *probeScreen) chart(width int) []string {
	var direct, relay *probe.TechniqueResult
	for i := range s.rows {
		r := &s.rows[i].TechniqueResult
		if r.Measured != natclass.Success || r.RTTMillis <= 0 || s.rows[i].family != "" {
			// The relay is IPv4's: it is compared with IPv4's direct path.
			continue
		}
		isRelay := r.Technique.IsRelay()
		switch {
		case isRelay && relay == nil:
			relay = r
		case !isRelay && (direct == nil || (s.verdict != nil && r.Technique == s.verdict.Technique)):
			direct = r
		}
	}
	if direct == nil || relay == nil {
		return nil
	}
	if rr := s.relay; rr != nil && rr.Direct != nil && rr.Relay != nil {
		// The figures the verdict's banner compares (the relay stage's
		// medians on both paths), not the punch's single round trip.
		return append([]string{headerStyle.Render("round trip, median: direct vs relay")}, bars(width, []barRow{
			{"direct " + string(cmp.Or(rr.DirectTechnique, direct.Technique)), rr.Direct.RTTMedianMillis, directBar},
			{string(relay.Technique), rr.Relay.RTTMedianMillis, relayBar},
		})...)
	}
	return append([]string{headerStyle.Render("round trip: direct vs relay")}, bars(width, []barRow{
		{"direct " + string(direct.Technique), direct.RTTMillis, directBar},
		{string(relay.Technique), relay.RTTMillis, relayBar},
	})...)
}
