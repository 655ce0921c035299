package server

import (
	"context"
	"errors"
)

// Group is one Server per address family, as `natlab serve` runs for a
// dual-stack host: RFC 5780 needs each family's own address plan, and a
// TURN relay hands out relayed addresses of the family it is reached
// over. The servers share their rendezvous registry (through Config), so
// peers pair across families. Its counters are the servers' sums.
type Group struct {
	Servers []*Server
}

// Stats sums the servers' counters.
func (g *Group) Stats() Stats {
	var t Stats
	for _, s := range g.Servers {
		st := s.Stats()
		t.Requests += st.Requests
		t.Responses += st.Responses
		t.Errors += st.Errors
		t.Dropped += st.Dropped
		t.SendFailures += st.SendFailures
	}
	return t
}

// LimitStats sums what the servers' per-source limits refused.
func (g *Group) LimitStats() LimitStats {
	var t LimitStats
	for _, s := range g.Servers {
		st := s.LimitStats()
		t.Binding += st.Binding
		t.TURN += st.TURN
		t.ConnsRefused += st.ConnsRefused
	}
	return t
}

// TURNStats sums the relays' counters; ok is false when none relays.
func (g *Group) TURNStats() (TURNStats, bool) {
	var t TURNStats
	relays := false
	for _, s := range g.Servers {
		st, ok := s.TURNStats()
		if !ok {
			continue
		}
		relays = true
		t.Allocations += st.Allocations
		t.AllocationsTotal += st.AllocationsTotal
		t.AuthFailures += st.AuthFailures
		t.QuotaRejections += st.QuotaRejections
		t.PeersRefused += st.PeersRefused
		t.TCPConnections += st.TCPConnections
		t.StaleNonces += st.StaleNonces
	}
	return t, relays
}

// Serve runs every server until ctx ends or one of them stops, then
// closes them all.
func (g *Group) Serve(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, len(g.Servers))
	for _, s := range g.Servers {
		go func() {
			err := s.Serve(ctx)
			cancel() // one stopped: stop the others
			errs <- err
		}()
	}
	var err error
	for range g.Servers {
		err = errors.Join(err, <-errs)
	}
	return err
}

// Close stops every server.
func (g *Group) Close() error {
	var err error
	for _, s := range g.Servers {
		err = errors.Join(err, s.Close())
	}
	return err
}
