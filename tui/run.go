package tui

import (
	"context"
	"errors"
	"io"
	"sync/atomic"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/natlab/natlab/probe"
)

// RunFunc is one run of the command (a probe, a lab, a matrix), supplied
// by the command layer: it does the network work and reports progress to
// emit, which never blocks.
type RunFunc func(ctx context.Context, emit func(probe.Event)) (Result, error)

// Config configures Run.
type Config struct {
	Model Model
	Run   RunFunc
	In    io.Reader
	Out   io.Writer
	// ProgramOptions are added to the program's (tests pass
	// tea.WithoutRenderer, say).
	ProgramOptions []tea.ProgramOption
	// FeedSize overrides FeedSize (tests use a tiny one).
	FeedSize int
}

// ErrQuit is returned when the user quit before any run finished.
var ErrQuit = errors.New("quit before the run finished")

// Run shows the model and calls c.Run, again each time the model asks for
// a rerun, until the user quits or ctx ends. It returns the last finished
// run's result. The run's events travel through a Feed, so a slow or
// stalled terminal never holds the run up.
func Run(ctx context.Context, c Config) (Result, error) {
	reruns := make(chan struct{}, 1)
	opts := append([]tea.ProgramOption{tea.WithContext(ctx), tea.WithInput(c.In), tea.WithOutput(c.Out)}, c.ProgramOptions...)
	p := tea.NewProgram(driver{c.Model, reruns}, opts...)

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var last Result
	lastErr := ErrQuit
	ctrlDone := make(chan struct{})
	go func() {
		defer close(ctrlDone)
		for id := 1; runCtx.Err() == nil; id++ {
			res, err, again := runOnce(runCtx, p, id, c, reruns)
			if runCtx.Err() != nil {
				return // quitting: this run was cut short, keep the last whole one
			}
			last, lastErr = res, err
			if again {
				continue
			}
			select {
			case <-reruns:
			case <-runCtx.Done():
				return
			}
		}
	}()
	_, perr := p.Run()
	cancel()
	<-ctrlDone
	if perr != nil && !errors.Is(perr, tea.ErrProgramKilled) && !errors.Is(perr, context.Canceled) {
		return last, perr
	}
	if lastErr == nil && last == (Result{}) {
		lastErr = ErrQuit
	}
	if ctx.Err() != nil && last == (Result{}) {
		return last, ctx.Err()
	}
	return last, lastErr
}

// runOnce runs c.Run once as run id, pumping its events into the program.
// again reports that a rerun was asked for while it ran.
func runOnce(ctx context.Context, p *tea.Program, id int, c Config, reruns <-chan struct{}) (res Result, err error, again bool) {
	size := c.FeedSize
	if size <= 0 {
		size = FeedSize
	}
	feed := NewFeed(size)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var asked atomic.Bool
	watchDone := make(chan struct{})
	defer close(watchDone)
	go func() {
		select {
		case <-reruns:
			asked.Store(true)
		case <-watchDone:
		}
	}()
	type outcome struct {
		res Result
		err error
	}
	out := make(chan outcome, 1)
	go func() {
		r, err := c.Run(rctx, feed.Push)
		feed.Close()
		out <- outcome{r, err}
	}()
	// Send blocks while the program is busy; that is the pump's problem,
	// never the run's: Push drops instead of waiting for it.
	p.Send(StartMsg{Run: id})
	for e := range feed.C() {
		p.Send(EventMsg{Run: id, Event: e})
	}
	o := <-out
	p.Send(DoneMsg{Run: id, Result: o.res, Err: o.err, Dropped: feed.Dropped()})
	return o.res, o.err, asked.Load()
}

// driver passes every message to the model and forwards its rerun
// requests to the controller; the model itself stays pure.
type driver struct {
	Model
	reruns chan<- struct{}
}

func (d driver) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	if _, ok := msg.(RerunMsg); ok {
		select {
		case d.reruns <- struct{}{}:
		default: // one request pending is enough
		}
		return d, nil
	}
	m, cmd := d.Model.Update(msg)
	d.Model = m.(Model)
	return d, cmd
}
