package leakcheck

import (
	"strings"
	"testing"
)

// recorder catches Errorf so the check itself can be tested.
type recorder struct {
	testing.TB
	cleanups []func()
	errs     []string
}

func (r *recorder) Helper()                   {}
func (r *recorder) Cleanup(f func())          { r.cleanups = append(r.cleanups, f) }
func (r *recorder) Errorf(f string, _ ...any) { r.errs = append(r.errs, f) }

func TestCheck(t *testing.T) {
	r := &recorder{TB: t}
	Check(r)
	stop := make(chan struct{})
	go func() { <-stop }()
	r.cleanups[0]() // the goroutine is still running: a leak
	if len(r.errs) != 1 || !strings.Contains(r.errs[0], "goroutine leak") {
		t.Fatalf("leak not reported: %v", r.errs)
	}
	close(stop)

	r = &recorder{TB: t}
	Check(r)
	r.cleanups[0]()
	if len(r.errs) != 0 {
		t.Fatalf("no leak, but reported: %v", r.errs)
	}
}
