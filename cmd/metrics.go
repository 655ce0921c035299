package cmd

import (
	"fmt"

	"github.com/natlab/natlab/metrics"
	"github.com/natlab/natlab/rendezvous"
	"github.com/natlab/natlab/server"
)

// serverCounters is what the collector reads: a *server.Server, or a
// *server.Group summing one server per family.
type serverCounters interface {
	Stats() server.Stats
	LimitStats() server.LimitStats
	TURNStats() (server.TURNStats, bool)
}

// startServeMetrics serves the server's counters at http://addr/metrics,
// read from srv and rz at scrape time; stop ends it. An empty addr serves
// nothing. This is the one hook `natlab serve --metrics` calls.
func startServeMetrics(s IOStreams, addr string, srv serverCounters, rz *rendezvous.Registry) (stop func(), err error) {
	if addr == "" {
		return func() {}, nil
	}
	src := metrics.ServerSources{STUN: srv.Stats, Relay: turnStats(srv), Limits: srv.LimitStats}
	if rz != nil {
		src.Rendezvous = rz.Stats
	}
	reg := metrics.NewRegistry()
	reg.MustRegister(metrics.NewServerCollector(src))
	ms, err := metrics.Listen(addr, reg)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(s.ErrOut, "serving metrics on %s\n", ms.URL())
	return func() { _ = ms.Close() }, nil
}

// turnStats adapts the TURN relay's counters to the collector's hook; ok
// is false when the server relays nothing, and no TURN metric appears.
func turnStats(srv serverCounters) func() (metrics.RelayStats, bool) {
	return func() (metrics.RelayStats, bool) {
		t, ok := srv.TURNStats()
		return metrics.RelayStats{
			Allocations: t.Allocations, AllocationsTotal: t.AllocationsTotal, AuthFailures: t.AuthFailures,
			QuotaRejections: t.QuotaRejections, PeersRefused: t.PeersRefused, TCPConnections: t.TCPConnections,
			StaleNonces: t.StaleNonces,
		}, ok
	}
}
