package tui

import (
	"context"
	"io"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/natlab/natlab/lab"
	"github.com/natlab/natlab/probe"
)

func TestFeedNeverBlocks(t *testing.T) {
	f := NewFeed(4)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 1000 {
			f.Push(probe.Event{Step: i})
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Push blocked with nobody reading")
	}
	if got := f.Dropped(); got != 996 {
		t.Errorf("dropped %d, want 996", got)
	}
	f.Close()
	f.Close()             // idempotent
	f.Push(probe.Event{}) // ignored after Close, no panic
	var steps []int
	for e := range f.C() {
		steps = append(steps, e.Step)
	}
	// The newest survive: they are what the screen should show.
	if len(steps) != 4 || steps[3] != 999 {
		t.Errorf("kept %v, want the last four", steps)
	}
}

func TestFeedCopiesMatrixPair(t *testing.T) {
	f := NewFeed(1)
	mp := &lab.MatrixPair{A: "a", B: "b"}
	f.Push(probe.Event{Data: mp})
	mp.A = "changed"
	if got := (<-f.C()).Data.(*lab.MatrixPair); got.A != "a" {
		t.Errorf("the feed shares the producer's pair: %q", got.A)
	}
}

// settleGoroutines waits for goroutines to drop back to n (the program's
// and the controller's exit asynchronously), failing if they do not.
func settleGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("goroutines leaked: %d > %d\n%s", runtime.NumGoroutine(), n, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestStalledViewDoesNotSlowProducer runs a probe-shaped producer against
// a program whose event loop takes 20 ms per message (a terminal that
// cannot keep up): the producer must finish as if nobody watched.
func TestStalledViewDoesNotSlowProducer(t *testing.T) {
	before := runtime.NumGoroutine()
	const events = 20000
	var produced atomic.Int64 // nanoseconds the producer spent emitting
	runDone := make(chan struct{})
	run := func(ctx context.Context, emit func(probe.Event)) (Result, error) {
		defer close(runDone)
		start := time.Now()
		for i := range events {
			emit(probe.Event{Stage: "technique", Step: i, Message: "udp: predicted success"})
		}
		produced.Store(int64(time.Since(start)))
		return Result{Probe: &probe.Report{Side: "A"}}, nil
	}
	stall := tea.WithFilter(func(_ tea.Model, msg tea.Msg) tea.Msg {
		if _, ok := msg.(EventMsg); ok {
			time.Sleep(20 * time.Millisecond)
		}
		return msg
	})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := Run(ctx, Config{Model: New(Options{Kind: KindProbe, Static: true}), Run: run, In: eofReader{}, Out: io.Discard,
			ProgramOptions: []tea.ProgramOption{stall, tea.WithoutRenderer()}})
		errc <- err
	}()
	select {
	case <-runDone:
	case <-time.After(10 * time.Second):
		t.Fatal("the producer was held up by the view") // 20000 × 20 ms would be 400 s
	}
	if d := time.Duration(produced.Load()); d > 2*time.Second {
		t.Errorf("emitting %d events took %v with a stalled view", events, d)
	}
	cancel()
	select {
	case <-errc:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	settleGoroutines(t, before)
}

// eofReader is an input with no keys that never ends the program (an
// io.EOF from stdin does not quit bubbletea, it stops reading).
type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

// TestRerunAndQuit: r after a run starts another through the command
// layer's function; q returns the last result.
func TestRerunAndQuit(t *testing.T) {
	before := runtime.NumGoroutine()
	var calls atomic.Int32
	run := func(ctx context.Context, emit func(probe.Event)) (Result, error) {
		n := calls.Add(1)
		emit(probe.Event{Stage: "profile", Message: "profiling"})
		return Result{Probe: &probe.Report{Side: string(rune('A' + n - 1)), Verdict: probe.Verdict{Direct: true}}}, nil
	}
	inR, inW := io.Pipe()
	type ret struct {
		res Result
		err error
	}
	out := make(chan ret, 1)
	go func() {
		res, err := Run(context.Background(), Config{Model: New(Options{Kind: KindProbe, Static: true}), Run: run, In: inR, Out: io.Discard,
			ProgramOptions: []tea.ProgramOption{tea.WithoutRenderer()}})
		out <- ret{res, err}
	}()
	// r is ignored while a run is in progress, so press it until the
	// second run has happened.
	deadline := time.Now().Add(10 * time.Second)
	for calls.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("r did not rerun")
		}
		_, _ = inW.Write([]byte("r"))
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	_, _ = inW.Write([]byte("q"))
	select {
	case r := <-out:
		if r.err != nil || r.res.Probe == nil {
			t.Fatalf("Run = %+v, %v; want the last report", r.res, r.err)
		}
		if want := string(rune('A' + calls.Load() - 1)); r.res.Probe.Side != want {
			t.Errorf("result of run %q, want the last run %q", r.res.Probe.Side, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("q did not quit")
	}
	_ = inW.Close()
	settleGoroutines(t, before)
}

// TestQuitBeforeDone: quitting while the run is in progress cancels it
// and says so.
func TestQuitBeforeDone(t *testing.T) {
	before := runtime.NumGoroutine()
	canceled := make(chan struct{})
	run := func(ctx context.Context, emit func(probe.Event)) (Result, error) {
		<-ctx.Done()
		close(canceled)
		return Result{}, ctx.Err()
	}
	inR, inW := io.Pipe()
	out := make(chan error, 1)
	go func() {
		_, err := Run(context.Background(), Config{Model: New(Options{Kind: KindLab, Static: true}), Run: run, In: inR, Out: io.Discard,
			ProgramOptions: []tea.ProgramOption{tea.WithoutRenderer()}})
		out <- err
	}()
	time.Sleep(100 * time.Millisecond)
	_, _ = inW.Write([]byte("q"))
	select {
	case err := <-out:
		if err != ErrQuit {
			t.Errorf("Run err = %v, want ErrQuit", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("q did not quit")
	}
	select {
	case <-canceled:
	default:
		t.Error("the run was not cancelled")
	}
	_ = inW.Close()
	settleGoroutines(t, before)
}
