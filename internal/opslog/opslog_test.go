package opslog

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestEventOncePerIntervalWithCount(t *testing.T) {
	var b bytes.Buffer
	o := New(slog.New(slog.NewTextHandler(&b, nil)))
	for range 5 {
		o.Event(slog.LevelWarn, "drop", "dropped", "from", "192.0.2.1")
	}
	o.Event(slog.LevelWarn, "other", "other kind")
	o.Event(slog.LevelDebug, "quiet", "below the level") // not enabled: not logged
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "event=drop") || !strings.Contains(lines[1], "event=other") {
		t.Fatalf("want one line per kind, got:\n%s", b.String())
	}
	// The next line of the kind carries the count of the suppressed ones.
	ks, _ := o.kinds.Load("drop")
	ks.(*kindState).next.Store(0)
	o.Event(slog.LevelWarn, "drop", "dropped")
	if !strings.Contains(b.String(), "suppressed=4") {
		t.Errorf("want suppressed=4:\n%s", b.String())
	}
	var nilLog *Log
	nilLog.Event(slog.LevelError, "x", "nothing") // must not panic
}
