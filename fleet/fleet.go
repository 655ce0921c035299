// Package fleet predicts a whole population of hosts at once: every pair
// of hosts through natlab's own predictor (natclass.Predict, the one
// `natlab probe` uses, and natclass.PredictRelay), weighted by the users or
// traffic behind each host. Hosts whose predictor inputs are identical
// form one class, so a fleet costs classes², not hosts²: the predictor
// runs once per pair of classes, and the weights of the hosts in a class
// are kept as sums.
package fleet

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"

	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/probe"
)

// Schema versions the JSON document of `natlab fleet`.
const Schema = "natlab.fleet/v1"

// Techniques keys besides natclass's techniques.
const (
	// NoPath: neither a direct path nor a relay.
	NoPath = "none"
	// Unknown: the profiles cannot tell (a technique tried before any
	// that works reads a TCP profile that was not measured).
	Unknown = "unknown"
)

// Host is one member of the fleet.
type Host struct {
	// Summary is the predictor's input for the host
	// (probe.HostSummary); its public address is ignored: fleet hosts
	// are on different networks.
	Summary natclass.Summary
	// Weight is how many users (or how much traffic) the host stands
	// for; 0 means 1.
	Weight float64
	// LifetimeS is how long the host's UDP mapping survives without
	// traffic, in seconds (0: not measured). A direct path carries
	// traffic both ways, so the established lifetime is used when it was
	// measured.
	LifetimeS float64
}

// class is a set of hosts with identical predictor inputs. The weight
// sums are all Fleet needs to weigh the pairs exactly.
type class struct {
	summary natclass.Summary
	hosts   int
	w, w2   float64 // Σ weight, Σ weight²
	lw, lw2 float64 // the same over hosts whose keepalive cost is known
	ka, ka2 float64 // Σ w·kph, Σ w²·kph: keepalive packets per hour
}

// Fleet accumulates hosts into classes. Its memory grows with the number
// of classes, never with the number of hosts.
type Fleet struct {
	classes map[string]*class
	order   []string // keys in the order first seen, for stable output
	hosts   int
	// lifetimes counts hosts behind a NAT with a measured lifetime: without
	// any, there is no keepalive cost to report.
	lifetimes int
	tcp       natclass.TCPSummary // the host's TCP summary without its address, reused
	key       bytes.Buffer        // the class key being built, reused
	enc       *json.Encoder       // writes into key
}

// New returns an empty fleet.
func New() *Fleet {
	f := &Fleet{classes: map[string]*class{}}
	f.enc = json.NewEncoder(&f.key)
	return f
}

// Hosts is the number of hosts added.
func (f *Fleet) Hosts() int { return f.hosts }

// Classes is the number of distinct predictor inputs among the hosts.
func (f *Fleet) Classes() int { return len(f.classes) }

// Add puts a host into its class.
func (f *Fleet) Add(h Host) error {
	w := h.Weight
	if w == 0 {
		w = 1
	}
	if w < 0 || math.IsNaN(w) || math.IsInf(w, 0) {
		return fmt.Errorf("weight %v: want a positive number", h.Weight)
	}
	if h.LifetimeS < 0 || math.IsNaN(h.LifetimeS) || math.IsInf(h.LifetimeS, 0) {
		return fmt.Errorf("binding lifetime %v s: want a positive number", h.LifetimeS)
	}
	s := h.Summary
	// The per-host fields: the public addresses (same-lan never applies
	// across a fleet).
	s.Mapped = ""
	if s.TCPProfile != nil {
		f.tcp = *s.TCPProfile // reused: no allocation per host
		f.tcp.Mapped = ""
		s.TCPProfile = &f.tcp
	}
	// The key is the summary's JSON: whatever fields the predictor's
	// input gains, hosts that differ in them land in different classes.
	f.key.Reset()
	if err := f.enc.Encode(s); err != nil {
		return fmt.Errorf("class key: %w", err)
	}
	c := f.classes[string(f.key.Bytes())]
	if c == nil {
		if s.TCPProfile != nil {
			t := *s.TCPProfile // the class keeps its own copy
			s.TCPProfile = &t
		}
		c = &class{summary: s}
		k := f.key.String()
		f.classes[k] = c
		f.order = append(f.order, k)
	}
	c.hosts++
	c.w += w
	c.w2 += w * w
	if s.NATType != natclass.Open && h.LifetimeS > 0 {
		f.lifetimes++
	}
	if kph, ok := keepalivePerHour(s, h.LifetimeS); ok {
		c.lw += w
		c.lw2 += w * w
		c.ka += w * kph
		c.ka2 += w * w * kph
	}
	f.hosts++
	return nil
}

// keepalivePerHour is the packets per hour a host sends to keep its
// mapping alive: none without a NAT, unknown without a measured lifetime.
func keepalivePerHour(s natclass.Summary, lifetimeS float64) (float64, bool) {
	switch {
	case s.NATType == natclass.Open:
		return 0, true
	case lifetimeS <= 0:
		return 0, false
	}
	return 3600 / probe.KeepaliveInterval(lifetimeS), true
}

// Best is the technique a pair of hosts should use, as the probe's
// verdict picks it: the first direct technique predicted to succeed, else
// the relay the relay stage would use, else NoPath; Unknown when a
// technique on the way cannot be predicted.
func Best(a, b natclass.Summary) string {
	for _, p := range natclass.Predict(a, b) {
		switch p.Outcome {
		case natclass.Success:
			return string(p.Technique)
		case natclass.UnknownOutcome:
			return Unknown
		}
	}
	switch r := natclass.PredictRelay(a, b); r.Outcome {
	case natclass.Success:
		return string(r.Technique)
	case natclass.UnknownOutcome:
		return Unknown
	}
	return NoPath
}

// isDirect reports whether a Best value is a direct technique.
func isDirect(best string) bool {
	switch best {
	case NoPath, Unknown, string(natclass.RelayUDP), string(natclass.RelayTCP):
		return false
	}
	return true
}
