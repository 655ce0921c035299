// Package opslog writes the events a server operator watches (refusals,
// rate-limit drops, authentication failures) to a slog.Logger, each kind at
// most once per interval: a client hammering the server must not turn the
// log into its echo. The count of the events not written comes with the
// next line of that kind.
package opslog

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Every is how often one kind of event is logged at most.
const Every = 10 * time.Second

// Log is safe for concurrent use; a nil *Log discards everything.
type Log struct {
	log   *slog.Logger
	kinds sync.Map // kind → *kindState
}

type kindState struct {
	next       atomic.Int64 // unix ns before which the kind is only counted
	suppressed atomic.Int64
}

// New returns a Log writing to l.
func New(l *slog.Logger) *Log { return &Log{log: l} }

// Event logs msg at level under kind, unless kind was logged within
// Every; then it only counts it. The path that only counts takes no lock,
// so it may sit where packets are dropped.
func (o *Log) Event(level slog.Level, kind, msg string, args ...any) {
	if o == nil || !o.log.Enabled(context.Background(), level) {
		return
	}
	v, ok := o.kinds.Load(kind)
	if !ok {
		v, _ = o.kinds.LoadOrStore(kind, &kindState{})
	}
	ks := v.(*kindState)
	now := time.Now().UnixNano()
	next := ks.next.Load()
	if now < next || !ks.next.CompareAndSwap(next, now+int64(Every)) {
		ks.suppressed.Add(1)
		return
	}
	if n := ks.suppressed.Swap(0); n > 0 {
		args = append(args, "suppressed", n)
	}
	o.log.Log(context.Background(), level, msg, append([]any{"event", kind}, args...)...)
}
