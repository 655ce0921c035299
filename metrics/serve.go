package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/natlab/natlab/rendezvous"
	"github.com/natlab/natlab/server"
)

// RelayStats are the TURN relay's counters, as the relay reports them.
type RelayStats struct {
	Allocations      int64  // alive now
	AllocationsTotal uint64 // created since start
	AuthFailures     uint64 // bad or expired credentials
	QuotaRejections  uint64 // 486 Allocation Quota Reached sent
	PeersRefused     uint64 // refused by the peer policy
	TCPConnections   uint64 // TURN over TCP and TLS accepted
	StaleNonces      uint64 // signed requests whose nonce was issued to another address
}

// ServerSources are the snapshots a server collector reads at scrape
// time; each is a function so the collector holds no server state.
type ServerSources struct {
	STUN       func() server.Stats
	Rendezvous func() rendezvous.Stats // nil: the server has no rendezvous
	// Relay is the TURN hook: nil, or ok false, means no relay metrics.
	Relay func() (RelayStats, bool)
	// Limits is what the per-source limits refused; nil: none.
	Limits func() server.LimitStats
}

// ServerCollector turns a server's Stats into metrics on every scrape,
// so the server keeps plain atomic counters and knows nothing of
// Prometheus.
type ServerCollector struct {
	src ServerSources

	stunRequests, stunResponses, stunErrors, stunDropped, stunSendFailures *prometheus.Desc
	pairings, paired, rejected                                             *prometheus.Desc
	allocations, allocationsTotal, authFailures, quotaRejections           *prometheus.Desc
	peersRefused, turnTCP                                                  *prometheus.Desc
	rateLimited, connsRefused, muted, staleNonces                          *prometheus.Desc
}

// NewServerCollector returns a collector over src.
func NewServerCollector(src ServerSources) *ServerCollector {
	d := func(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, nil, nil) }
	return &ServerCollector{
		src:              src,
		stunRequests:     d("natlab_stun_requests_total", "STUN requests received (UDP and TCP)."),
		stunResponses:    d("natlab_stun_responses_total", "STUN success responses sent (bindings answered)."),
		stunErrors:       d("natlab_stun_errors_total", "STUN error responses sent (400, 420)."),
		stunDropped:      d("natlab_stun_dropped_total", "Datagrams ignored: not STUN, responses, indications, bad FINGERPRINT."),
		stunSendFailures: d("natlab_stun_send_failures_total", "Responses the network refused to send."),
		pairings:         d("natlab_rendezvous_pairings", "Pairings alive in the rendezvous."),
		paired:           d("natlab_rendezvous_paired_total", "Pairings that got their second peer."),
		rejected:         d("natlab_rendezvous_rejected_total", "Rendezvous requests answered with an error."),
		allocations:      d("natlab_turn_allocations", "TURN allocations alive."),
		allocationsTotal: d("natlab_turn_allocations_total", "TURN allocations created."),
		authFailures:     d("natlab_turn_auth_failures_total", "TURN requests with bad or expired credentials."),
		quotaRejections:  d("natlab_turn_quota_rejections_total", "TURN allocations refused by the per-user quota."),
		peersRefused:     d("natlab_turn_peers_refused_total", "TURN permissions, channels and sends refused by the peer policy."),
		turnTCP:          d("natlab_turn_tcp_connections_total", "TURN connections accepted over TCP and TLS."),
		rateLimited: prometheus.NewDesc("natlab_rate_limited_total",
			"Messages dropped unanswered by the per-source rate limits, by kind (binding, turn, rendezvous).", []string{"kind"}, nil),
		connsRefused: d("natlab_conns_refused_total", "TCP and TLS connections closed at once: their source held its cap."),
		staleNonces:  d("natlab_turn_stale_nonces_total", "Signed TURN requests whose nonce was issued to another address (438 sent): replays, or clients that moved."),
		muted:        d("natlab_rendezvous_muted_total", "Rendezvous answers not sent: more than 3 times the request (unpadded, or a reflection attempt)."),
	}
}

// Describe sends every descriptor; the relay's are described even when
// absent, which Prometheus allows (a described metric may be missing).
func (c *ServerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.stunRequests, c.stunResponses, c.stunErrors, c.stunDropped, c.stunSendFailures,
		c.pairings, c.paired, c.rejected, c.allocations, c.allocationsTotal, c.authFailures, c.quotaRejections, c.peersRefused, c.turnTCP,
		c.rateLimited, c.connsRefused, c.muted, c.staleNonces} {
		ch <- d
	}
}

// Collect reads the snapshots now.
func (c *ServerCollector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	if c.src.STUN != nil {
		s := c.src.STUN()
		counter(c.stunRequests, s.Requests)
		counter(c.stunResponses, s.Responses)
		counter(c.stunErrors, s.Errors)
		counter(c.stunDropped, s.Dropped)
		counter(c.stunSendFailures, s.SendFailures)
	}
	if c.src.Rendezvous != nil {
		r := c.src.Rendezvous()
		gauge(c.pairings, float64(r.Pairings))
		counter(c.paired, r.Paired)
		counter(c.rejected, r.Rejected)
		counter(c.muted, r.Muted)
		ch <- prometheus.MustNewConstMetric(c.rateLimited, prometheus.CounterValue, float64(r.Limited), "rendezvous")
	}
	if c.src.Limits != nil {
		l := c.src.Limits()
		ch <- prometheus.MustNewConstMetric(c.rateLimited, prometheus.CounterValue, float64(l.Binding), "binding")
		ch <- prometheus.MustNewConstMetric(c.rateLimited, prometheus.CounterValue, float64(l.TURN), "turn")
		counter(c.connsRefused, l.ConnsRefused)
	}
	if c.src.Relay != nil {
		if t, ok := c.src.Relay(); ok {
			gauge(c.allocations, float64(t.Allocations))
			counter(c.allocationsTotal, t.AllocationsTotal)
			counter(c.authFailures, t.AuthFailures)
			counter(c.quotaRejections, t.QuotaRejections)
			counter(c.peersRefused, t.PeersRefused)
			counter(c.turnTCP, t.TCPConnections)
			counter(c.staleNonces, t.StaleNonces)
		}
	}
}
