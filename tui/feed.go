package tui

import (
	"sync"

	"github.com/natlab/natlab/lab"
	"github.com/natlab/natlab/probe"
)

// FeedSize is the feed's buffer: a probe emits a few dozen events and a
// matrix one per pair, so 256 absorbs a whole run while the view is busy;
// beyond that the view is stalled and only the newest events matter.
const FeedSize = 256

// Feed carries probe events from the probe's goroutines to the TUI. Push
// never blocks: when the buffer is full it drops the oldest event, so a
// stalled terminal cannot slow the probe (whose timings are the point).
// The final report replaces whatever the events said, so a dropped event
// costs liveness, never correctness.
type Feed struct {
	mu      sync.Mutex
	ch      chan probe.Event
	closed  bool
	dropped int
}

// NewFeed returns a feed buffering size events.
func NewFeed(size int) *Feed { return &Feed{ch: make(chan probe.Event, max(size, 1))} }

// Push queues e without blocking; it is probe.Options.Events.
func (f *Feed) Push(e probe.Event) {
	// The matrix hands out a pointer into its report, which it keeps
	// writing after the run: copy it while this goroutine owns it.
	if mp, ok := e.Data.(*lab.MatrixPair); ok && mp != nil {
		c := *mp
		e.Data = &c
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return
	}
	for {
		select {
		case f.ch <- e:
			return
		default:
		}
		select {
		case <-f.ch: // make room: the oldest event is the least useful
			f.dropped++
		default:
		}
	}
}

// C is the receiving end; it is closed by Close.
func (f *Feed) C() <-chan probe.Event { return f.ch }

// Close ends the feed once the producer is done; later Pushes are ignored.
func (f *Feed) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.closed {
		f.closed = true
		close(f.ch)
	}
}

// Dropped is how many events were discarded to keep Push from blocking.
func (f *Feed) Dropped() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.dropped
}
