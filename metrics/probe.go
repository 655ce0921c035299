package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/probe"
)

// Probe records the rounds of `natlab probe --interval` as metrics. The
// gauges describe the last round; the counters and the histogram add up
// over all of them.
type Probe struct {
	rounds       *prometheus.CounterVec
	outcomes     *prometheus.CounterVec
	direct       *prometheus.GaugeVec
	timeToDirect prometheus.Histogram
	directRTT    prometheus.Gauge
	relayRTT     *prometheus.GaugeVec
	nat          *prometheus.GaugeVec
	lastRound    prometheus.Gauge
	lastDuration prometheus.Gauge
	now          func() time.Time
}

// timeToDirectBuckets span a cone pair on a LAN (a few ms) to birthday
// probing across continents (the probe gives up after tens of seconds).
var timeToDirectBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// NewProbe registers the probe metrics on reg.
func NewProbe(reg prometheus.Registerer) *Probe {
	p := &Probe{
		rounds: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "natlab_probe_rounds_total",
			Help: "Probe rounds by result: direct (a direct path works), relay (a relay is required), error (the round failed)."}, []string{"result"}),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "natlab_probe_technique_outcomes_total",
			Help: "Measured outcomes per technique over all rounds."}, []string{"technique", "outcome"}),
		direct: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "natlab_probe_direct_success",
			Help: "1 if the direct technique worked in the last round, 0 if it failed or was skipped."}, []string{"technique"}),
		timeToDirect: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "natlab_probe_time_to_direct_seconds",
			Help: "From the synchronised start to the first packet on the chosen direct path.", Buckets: timeToDirectBuckets}),
		directRTT: prometheus.NewGauge(prometheus.GaugeOpts{Name: "natlab_probe_direct_rtt_seconds",
			Help: "Round trip on the chosen direct path in the last round that had one."}),
		relayRTT: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "natlab_probe_relay_rtt_seconds",
			Help: "Round trip through the relay in the last round that measured it."}, []string{"technique"}),
		nat: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "natlab_probe_nat_info",
			Help: "The last round's NAT profiles (value 1): side self or peer, with their RFC 3489 type and RFC 4787 behaviours."},
			[]string{"side", "nat_type", "mapping", "filtering"}),
		lastRound: prometheus.NewGauge(prometheus.GaugeOpts{Name: "natlab_probe_last_round_timestamp_seconds",
			Help: "When the last round ended (Unix time)."}),
		lastDuration: prometheus.NewGauge(prometheus.GaugeOpts{Name: "natlab_probe_last_round_duration_seconds",
			Help: "Wall time of the last successful round."}),
		now: time.Now,
	}
	reg.MustRegister(p.rounds, p.outcomes, p.direct, p.timeToDirect, p.directRTT, p.relayRTT, p.nat, p.lastRound, p.lastDuration)
	for _, r := range []string{"direct", "relay", "error"} {
		p.rounds.WithLabelValues(r) // present at 0 from the start, so rate() works from the first round
	}
	return p
}

// Observe records one finished round.
func (p *Probe) Observe(r *probe.Report) {
	p.lastRound.Set(float64(p.now().UnixNano()) / 1e9)
	p.lastDuration.Set(r.DurationMillis / 1000)
	result := "relay"
	if r.Verdict.Direct {
		result = "direct"
	}
	p.rounds.WithLabelValues(result).Inc()
	for _, t := range r.Techniques {
		p.outcomes.WithLabelValues(string(t.Technique), string(t.Measured)).Inc()
		ok := t.Measured == natclass.Success
		switch {
		case t.Technique.IsRelay():
			if ok && t.RTTMillis > 0 {
				p.relayRTT.WithLabelValues(string(t.Technique)).Set(t.RTTMillis / 1000)
			}
		case ok:
			p.direct.WithLabelValues(string(t.Technique)).Set(1)
		default:
			p.direct.WithLabelValues(string(t.Technique)).Set(0)
		}
		if ok && r.Verdict.Direct && t.Technique == r.Verdict.Technique {
			p.timeToDirect.Observe(t.TimeToFirstPacketMillis / 1000)
			p.directRTT.Set(t.RTTMillis / 1000)
		}
	}
	// Info-style: only the current profiles carry a 1.
	p.nat.Reset()
	if r.Self != nil {
		p.nat.WithLabelValues("self", string(r.Self.NATType), string(r.Self.Mapping), string(r.Self.Filtering)).Set(1)
	}
	p.nat.WithLabelValues("peer", string(r.Peer.NATType), string(r.Peer.Mapping), string(r.Peer.Filtering)).Set(1)
}

// ObserveError records a round that failed (no peer, server unreachable).
func (p *Probe) ObserveError() {
	p.lastRound.Set(float64(p.now().UnixNano()) / 1e9)
	p.rounds.WithLabelValues("error").Inc()
}
