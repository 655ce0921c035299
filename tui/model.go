// Package tui renders natlab's runs (probe, lab, lab --matrix) as a
// bubbletea program. It holds no network code: the command layer runs the
// probe and hands its events in as messages; the model only draws them.
package tui

import (
	"strings"

	"github.com/charmbracelet/bubbles/help"
	"github.com/charmbracelet/bubbles/key"
	"github.com/charmbracelet/bubbles/spinner"
	tea "github.com/charmbracelet/bubbletea"

	"github.com/natlab/natlab/fleet"
	"github.com/natlab/natlab/lab"
	"github.com/natlab/natlab/probe"
)

// Kind selects the screen a run is shown on.
type Kind int

// The run kinds.
const (
	KindProbe  Kind = iota // natlab probe
	KindLab                // natlab lab
	KindMatrix             // natlab lab --matrix
	KindFleet              // natlab fleet
)

// Result is what one run produced; exactly one field is set.
type Result struct {
	Probe  *probe.Report
	Lab    *lab.Report
	Matrix *lab.MatrixReport
	Fleet  *fleet.Report
}

// Messages between the command layer (through Run) and the model.
type (
	// StartMsg says run number Run has started: the screen resets.
	StartMsg struct{ Run int }
	// EventMsg is one probe event of run Run.
	EventMsg struct {
		Run   int
		Event probe.Event
	}
	// DoneMsg ends run Run with its result or error; Dropped counts events
	// the feed discarded because the view was behind.
	DoneMsg struct {
		Run     int
		Result  Result
		Err     error
		Dropped int
	}
	// RerunMsg is the model asking the command layer for a new run.
	RerunMsg struct{}
)

// Options configure a Model.
type Options struct {
	Kind  Kind
	Title string // first line, e.g. "natlab probe · server 203.0.113.10:3478"
	// Static stops the spinner from ticking, so that golden tests see the
	// same frame on every run.
	Static bool
}

// Model is the root model: global keys, window size and help; the screen
// of the run's kind draws the rest.
type Model struct {
	opts     Options
	keys     keyMap
	help     help.Model
	spin     spinner.Model
	showHelp bool
	width    int
	height   int

	run     int
	running bool
	err     error
	dropped int

	probe  probeScreen
	lab    labScreen
	matrix matrixScreen
	fleet  fleetScreen
}

// Default terminal size until the first WindowSizeMsg: the smallest the
// screens are laid out for.
const (
	defaultWidth  = 80
	defaultHeight = 24
)

// New returns a model waiting for its first run.
func New(o Options) Model {
	s := spinner.New(spinner.WithSpinner(spinner.Line), spinner.WithStyle(spinnerStyle))
	m := Model{opts: o, keys: defaultKeys(), help: help.New(), spin: s, width: defaultWidth, height: defaultHeight, running: true}
	m.reset()
	return m
}

func (m *Model) reset() {
	m.err, m.dropped = nil, 0
	m.probe = probeScreen{}
	m.lab = labScreen{}
	m.matrix = matrixScreen{row: m.matrix.row, col: m.matrix.col}
	m.fleet = fleetScreen{}
}

// Init starts the spinner.
func (m Model) Init() tea.Cmd {
	if m.opts.Static {
		return nil
	}
	return m.spin.Tick
}

// Update is a pure step: it never blocks and never touches the network.
func (m Model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
		m.help.Width = msg.Width
		return m, nil
	case tea.KeyMsg:
		return m.key(msg)
	case spinner.TickMsg:
		if m.opts.Static {
			return m, nil
		}
		var cmd tea.Cmd
		m.spin, cmd = m.spin.Update(msg)
		return m, cmd
	case StartMsg:
		m.run, m.running = msg.Run, true
		m.reset()
		return m, nil
	case EventMsg:
		if msg.Run != m.run {
			return m, nil // a late event of a run already replaced
		}
		switch m.opts.Kind {
		case KindProbe:
			m.probe.event(msg.Event)
		case KindLab:
			m.lab.event(msg.Event)
		case KindMatrix:
			m.matrix.event(msg.Event)
		}
		return m, nil
	case DoneMsg:
		if msg.Run != m.run {
			return m, nil
		}
		m.running, m.err, m.dropped = false, msg.Err, msg.Dropped
		switch {
		case msg.Result.Probe != nil:
			m.probe.done(msg.Result.Probe)
		case msg.Result.Lab != nil:
			m.lab.done(msg.Result.Lab)
		case msg.Result.Matrix != nil:
			m.matrix.done(msg.Result.Matrix)
		case msg.Result.Fleet != nil:
			m.fleet.done(msg.Result.Fleet)
		}
		return m, nil
	}
	return m, nil
}

func (m Model) activeKeys() keyMap {
	return m.keys.forScreen(m.opts.Kind == KindMatrix, m.matrix.details, m.running)
}

func (m Model) key(msg tea.KeyMsg) (tea.Model, tea.Cmd) {
	k := m.activeKeys()
	switch {
	case key.Matches(msg, k.Quit):
		return m, tea.Quit
	case key.Matches(msg, k.Help):
		m.showHelp = !m.showHelp
		return m, nil
	case m.showHelp && key.Matches(msg, m.keys.Back):
		m.showHelp = false
		return m, nil
	case m.showHelp:
		return m, nil // the help screen takes no other keys
	case key.Matches(msg, k.Rerun):
		return m, func() tea.Msg { return RerunMsg{} }
	}
	if m.opts.Kind == KindMatrix {
		m.matrix.key(msg, k)
	}
	return m, nil
}

// View draws the current screen, cut to the window.
func (m Model) View() string {
	w, h := m.width, m.height
	k := m.activeKeys()
	if m.showHelp {
		return fit(m.helpView(k), w, h)
	}
	footer := m.help.ShortHelpView(k.ShortHelp())
	var body string
	v := view{width: w, height: h - 1, spin: m.spin.View(), running: m.running, err: m.err, dropped: m.dropped, title: m.opts.Title}
	switch m.opts.Kind {
	case KindProbe:
		body = m.probe.view(v)
	case KindLab:
		body = m.lab.view(v)
	case KindMatrix:
		body = m.matrix.view(v)
	case KindFleet:
		body = m.fleet.view(v)
	}
	return fit(body, w, h-1) + "\n" + truncate(footer, w)
}

func (m Model) helpView(k keyMap) string {
	var b strings.Builder
	b.WriteString(titleStyle.Render("natlab — keys") + "\n\n")
	b.WriteString(m.help.FullHelpView(k.FullHelp()) + "\n\n")
	b.WriteString(strings.Join([]string{
		"The probe screen shows each stage, both NAT profiles, every technique",
		"as it is tried (predicted, measured, attempts, time to first packet and",
		"round trip), direct against relayed RTT, and the verdict.",
		"",
		"The matrix screen pairs every NAT preset with every other; move with",
		"the arrows and press enter for a pair's techniques and why each",
		"worked or not; esc goes back.",
		"",
		"r reruns once a run is over; q quits (the last result is printed as",
		"text). NO_COLOR=1 turns colours off; without a terminal natlab prints",
		"plain text, and --json / --events print JSON.",
	}, "\n"))
	b.WriteString("\n\n" + dimStyle.Render("? or esc closes this help"))
	return b.String()
}

// view is what every screen needs to draw itself.
type view struct {
	width, height int
	spin          string
	running       bool
	err           error
	dropped       int
	title         string
}
