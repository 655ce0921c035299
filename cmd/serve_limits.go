package cmd

import (
	"github.com/spf13/pflag"

	"github.com/natlab/natlab/rendezvous"
	"github.com/natlab/natlab/server"
)

// serveLimits are the per-source limits of `natlab serve` (a source is an
// IPv4 address or an IPv6 /64). 0 turns a limit off.
type serveLimits struct {
	BindingRate, TURNRate, RendezvousRate    float64
	BindingBurst, TURNBurst, RendezvousBurst int
	Pairings, Conns                          int
}

// addLimitFlags registers the limit flags, kept together in one block.
func addLimitFlags(f *pflag.FlagSet, l *serveLimits) {
	f.Float64Var(&l.BindingRate, "binding-rate", server.DefaultBindingRate, "Binding requests a second per source; more are dropped (0: unlimited)")
	f.IntVar(&l.BindingBurst, "binding-burst", server.DefaultBindingBurst, "Binding requests one source may send at once")
	f.Float64Var(&l.TURNRate, "turn-rate", server.DefaultTURNRate, "TURN requests a second per source, relayed data not counted (0: unlimited)")
	f.IntVar(&l.TURNBurst, "turn-burst", server.DefaultTURNBurst, "TURN requests one source may send at once")
	f.Float64Var(&l.RendezvousRate, "rendezvous-rate", rendezvous.DefaultRate, "rendezvous messages a second per source (0: unlimited)")
	f.IntVar(&l.RendezvousBurst, "rendezvous-burst", rendezvous.DefaultBurst, "rendezvous messages one source may send at once")
	f.IntVar(&l.Pairings, "pairings-per-source", rendezvous.DefaultPairingsPerSource, "live rendezvous pairings one source may create (0: unlimited)")
	f.IntVar(&l.Conns, "conns-per-source", server.DefaultConnsPerSource, "TCP and TLS connections one source may hold open (0: unlimited)")
}

// check refuses negative values, which mean nothing.
func (l serveLimits) check() error {
	for _, f := range []struct {
		name string
		bad  bool
	}{
		{"--binding-rate", l.BindingRate < 0}, {"--binding-burst", l.BindingBurst < 0},
		{"--turn-rate", l.TURNRate < 0}, {"--turn-burst", l.TURNBurst < 0},
		{"--rendezvous-rate", l.RendezvousRate < 0}, {"--rendezvous-burst", l.RendezvousBurst < 0},
		{"--pairings-per-source", l.Pairings < 0}, {"--conns-per-source", l.Conns < 0},
	} {
		if f.bad {
			return flagErrorf("%s: want 0 (unlimited) or more", f.name)
		}
	}
	return nil
}

// off maps the flags' 0 (unlimited) to the libraries' negative value (their
// 0 means the default).
func off[T int | float64](v T) T {
	if v == 0 {
		return -1
	}
	return v
}

func (l serveLimits) server() server.Limits {
	return server.Limits{ConnsPerSource: off(l.Conns), BindingRate: off(l.BindingRate), BindingBurst: l.BindingBurst,
		TURNRate: off(l.TURNRate), TURNBurst: l.TURNBurst}
}

func (l serveLimits) rendezvous() rendezvous.Limits {
	return rendezvous.Limits{Rate: off(l.RendezvousRate), Burst: l.RendezvousBurst, PairingsPerSource: off(l.Pairings)}
}
