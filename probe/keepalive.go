package probe

import (
	"context"
	"fmt"
	"math"

	"github.com/natlab/natlab/natclass"
)

// keepaliveMargin: a keepalive goes out when this share of the lifetime
// has passed, so one lost or late packet does not let the mapping die.
const keepaliveMargin = 0.8

// KeepaliveInterval is how often a host whose mapping survives lifetimeS
// idle seconds must send to keep a direct path open (whole seconds, at
// least one). A NAT refreshes a mapping on outbound traffic only (RFC 4787
// REQ-6), so each NATed side sends its own.
func KeepaliveInterval(lifetimeS float64) float64 {
	return math.Max(1, math.Floor(lifetimeS*keepaliveMargin))
}

// Keepalive is what keeping this host's side of a direct UDP path open
// costs: the mobile battery and traffic bill of staying direct.
type Keepalive struct {
	// LifetimeS is the mapping lifetime it is derived from: the
	// established one (a direct path carries traffic both ways) when it
	// was measured, else the idle one.
	LifetimeS      float64 `json:"lifetime_s"`
	Established    bool    `json:"established"`
	IntervalS      float64 `json:"interval_s"`
	PacketsPerHour float64 `json:"packets_per_hour"`
}

// KeepaliveFor derives the keepalive from a profile's measured lifetimes;
// nil when none was measured or the host has no NAT.
func KeepaliveFor(p *natclass.Profile) *Keepalive {
	k := &Keepalive{}
	switch {
	case p == nil || p.NATType == natclass.Open:
		return nil
	case p.EstablishedLifetimeS != nil:
		k.LifetimeS, k.Established = *p.EstablishedLifetimeS, true
	case p.BindingLifetimeS != nil:
		k.LifetimeS = *p.BindingLifetimeS
	default:
		return nil
	}
	if k.LifetimeS <= 0 {
		return nil
	}
	k.IntervalS = KeepaliveInterval(k.LifetimeS)
	k.PacketsPerHour = 3600 / k.IntervalS
	return k
}

func (k *Keepalive) String() string {
	kind := "idle"
	if k.Established {
		kind = "once established"
	}
	return fmt.Sprintf("keepalive every %.0f s from this host (mapping lifetime %.0f s %s): %.0f packets/hour",
		k.IntervalS, k.LifetimeS, kind, k.PacketsPerHour)
}

// KeptAlive reports whether a technique's path runs through UDP mappings
// that die when idle.
func KeptAlive(t natclass.Technique) bool {
	switch t {
	case natclass.DirectUDP, natclass.PredictUDP, natclass.Birthday, natclass.MappedUDP:
		return true
	}
	return false
}

// lifetimeStage measures this host's binding lifetimes after the direct
// path is chosen (never during punching: its many mappings would spoil
// port prediction) and adds the keepalive cost to the report.
func (a *agent) lifetimeStage(ctx context.Context, rep *Report) error {
	if !rep.Verdict.Direct || !KeptAlive(rep.Verdict.Technique) || a.self.NATType == natclass.Open {
		return nil
	}
	a.emit(Event{Stage: StageLifetime, Message: "measuring how long this host's idle mappings live (up to 2 minutes)"})
	p, err := natclass.Discover(ctx, natclass.Options{Net: a.o.Net, Servers: []string{a.o.Server}, Logger: a.log,
		Lifetime: true, LifetimeMax: a.o.LifetimeMax})
	if err != nil {
		return fmt.Errorf("binding lifetime: %w", err)
	}
	a.self.BindingLifetimeS, a.self.EstablishedLifetimeS = p.BindingLifetimeS, p.EstablishedLifetimeS
	for _, nr := range p.NotRun {
		if nr.Test == natclass.TestBindingLifetime {
			a.self.NotRun = append(a.self.NotRun, nr)
		}
	}
	if rep.Keepalive = KeepaliveFor(a.self); rep.Keepalive != nil {
		rep.Verdict.Summary += "; " + rep.Keepalive.String()
		a.emit(Event{Stage: StageLifetime, Message: rep.Keepalive.String(), Data: rep.Keepalive})
	}
	return nil
}
