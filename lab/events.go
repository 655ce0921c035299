package lab

import (
	"sync"
	"time"

	"github.com/natlab/natlab/internal/millis"
	"github.com/natlab/natlab/probe"
)

// The lab's stages in events, next to the probe's (a matrix cell's event
// uses probe.StagePair with a *MatrixPair).
const (
	StageLab    probe.Stage = "lab"    // Data: Plan, before any site is measured
	StageSite   probe.Stage = "site"   // Data: *Site, once its profile is done
	StageMatrix probe.Stage = "matrix" // Data: MatrixPlan, before any pair runs
)

// Plan is the Data of the event that starts Run: the sites with what
// their presets should produce, before anything is measured. It is also
// the first line of `natlab lab --events`.
type Plan struct {
	Backend string `json:"backend"`
	Sites   []Site `json:"sites"` // name, preset and expected; no profile yet
}

// MatrixPlan is the Data of the event that starts RunMatrix: the grid's
// rows and columns before any pair has finished. It is also the first
// line of `natlab lab --matrix --events`.
type MatrixPlan struct {
	Backend  string            `json:"backend"`
	Presets  []string          `json:"presets"`
	Excluded map[string]string `json:"excluded,omitempty"`
}

// emitter stamps events with the time since the run started and calls
// the hook one at a time, whichever goroutine finished.
type emitter struct {
	mu    sync.Mutex
	fn    func(probe.Event)
	start time.Time
}

func newEmitter(fn func(probe.Event)) *emitter { return &emitter{fn: fn, start: time.Now()} }

func (e *emitter) emit(stage probe.Stage, msg string, data any) {
	if e.fn == nil {
		return
	}
	now := time.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	e.fn(probe.Event{Time: now, Stage: stage, Message: msg, Data: data, Elapsed: millis.Of(now.Sub(e.start))})
}
