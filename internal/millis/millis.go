// Package millis converts durations to the float milliseconds of natlab's
// JSON (every *_ms field), in one place.
package millis

import "time"

// Of is d in milliseconds, to the microsecond.
func Of(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// Since is the time since t in milliseconds.
func Since(t time.Time) float64 { return Of(time.Since(t)) }
