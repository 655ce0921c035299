package tui

import "github.com/charmbracelet/bubbles/key"

// keyMap is every key the TUI answers, with its help text; the root model
// enables and disables bindings per screen so that help shows only what
// works there.
type keyMap struct {
	Up, Down, Left, Right key.Binding
	Move                  key.Binding // the four arrows as one item of the short help
	Open, Back            key.Binding
	Rerun, Help, Quit     key.Binding
}

func defaultKeys() keyMap {
	return keyMap{
		Up:    key.NewBinding(key.WithKeys("up", "k"), key.WithHelp("↑/k", "up")),
		Down:  key.NewBinding(key.WithKeys("down", "j"), key.WithHelp("↓/j", "down")),
		Left:  key.NewBinding(key.WithKeys("left", "h"), key.WithHelp("←/h", "left")),
		Right: key.NewBinding(key.WithKeys("right", "l"), key.WithHelp("→/l", "right")),
		Move:  key.NewBinding(key.WithKeys("up", "down", "left", "right"), key.WithHelp("←↑↓→", "move")),
		Open:  key.NewBinding(key.WithKeys("enter"), key.WithHelp("enter", "details")),
		Back:  key.NewBinding(key.WithKeys("esc"), key.WithHelp("esc", "back")),
		Rerun: key.NewBinding(key.WithKeys("r"), key.WithHelp("r", "rerun")),
		Help:  key.NewBinding(key.WithKeys("?"), key.WithHelp("?", "help")),
		Quit:  key.NewBinding(key.WithKeys("q", "ctrl+c"), key.WithHelp("q", "quit")),
	}
}

// ShortHelp is the one line at the bottom of every screen.
func (k keyMap) ShortHelp() []key.Binding {
	return []key.Binding{k.Move, k.Open, k.Back, k.Rerun, k.Help, k.Quit}
}

// FullHelp is the help screen, in columns.
func (k keyMap) FullHelp() [][]key.Binding {
	return [][]key.Binding{
		{k.Up, k.Down, k.Left, k.Right},
		{k.Open, k.Back},
		{k.Rerun, k.Help, k.Quit},
	}
}

// forScreen enables the bindings that do something on the current screen.
func (k keyMap) forScreen(matrix, details, running bool) keyMap {
	nav := matrix && !details
	for _, b := range []*key.Binding{&k.Up, &k.Down, &k.Left, &k.Right, &k.Move, &k.Open} {
		b.SetEnabled(nav)
	}
	k.Back.SetEnabled(details)
	// A rerun starts only once the run is over: cancelling a paired probe
	// half-way would leave the peer waiting at a barrier.
	k.Rerun.SetEnabled(!running)
	return k
}
