// Package leakcheck fails a test whose goroutines outlive it, the check
// every socket-owning package of natlab runs (as pion/ice's tests do).
package leakcheck

import (
	"runtime"
	"testing"
	"time"
)

const (
	// wait is how long goroutines get to end after the test's cleanups:
	// closing a socket ends its reader within milliseconds, so two seconds
	// only ever passes for a real leak.
	wait = 2 * time.Second
	// poll is how often the count is looked at while waiting.
	poll = 10 * time.Millisecond
)

// Check fails t if, once the cleanups registered after this call have run,
// more goroutines are left than when it was called; it prints their stacks.
func Check(t testing.TB) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(wait)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("goroutine leak: %d before, %d after\n%s", before, runtime.NumGoroutine(), buf)
				return
			}
			time.Sleep(poll)
		}
	})
}
