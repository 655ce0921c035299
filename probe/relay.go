package probe

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/pion/transport/v4"

	"github.com/natlab/natlab/holepunch"
	"github.com/natlab/natlab/internal/millis"
	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/relay"
)

// Relay timing, each with why.
const (
	// relayAllocTimeout bounds one transport's allocation in a probe:
	// three transports tried in turn must fit one barrier step (20 s),
	// and a TURN server answers within a round trip or two.
	relayAllocTimeout = 5 * time.Second
)

// RelayConfig says how a probe reaches the TURN relay.
type RelayConfig struct {
	// Server is the TURN server's host:port over UDP and TCP (natlab
	// serve shares its STUN port).
	Server string
	// TLSServer is host:port for TURN over TLS; "" skips TLS.
	TLSServer string
	// TLSConfig verifies the TLS server; nil uses the system roots.
	TLSConfig *tls.Config
	Username  string
	Password  string
	// SkipUDP leaves out the UDP attempt (the profile found UDP blocked,
	// so waiting for it would only spend the step's time).
	SkipUDP bool
	// Family is the relayed address's family, asked for with
	// REQUESTED-ADDRESS-FAMILY (relay.AllocOptions.Family); relay.IPv6
	// also reaches the server over IPv6. "" asks for none: the server
	// relays in its default family (natlab serve: the one it is reached in).
	Family relay.Family
	// Measure configures the measurements (relay defaults if zero).
	Measure relay.MeasureOptions
}

// RelayOffer is what a side sends the peer at the relay step.
type RelayOffer struct {
	// Relayed is this side's relayed address; "" if no allocation worked.
	Relayed string `json:"r,omitempty"`
	// Transport is how this side reaches the relay.
	Transport relay.Transport `json:"t,omitempty"`
	// Direct is the technique of the direct UDP path this side still
	// holds for measuring; "" if none.
	Direct natclass.Technique `json:"d,omitempty"`
	// V6 is this side's IPv6 relay, when it runs one (both IPv6 plans
	// ran): the IPv6 relay is measured when both offers carry one.
	V6 *RelayOffer `json:"6,omitempty"`
}

// RelayAttempt is one transport tried for the allocation.
type RelayAttempt struct {
	Transport       relay.Transport `json:"transport"`
	AllocTimeMillis float64         `json:"alloc_time_ms,omitempty"` // connect + authenticate + allocate
	Error           string          `json:"error,omitempty"`
}

// RelayReport is the relay stage of one side's report.
type RelayReport struct {
	// Technique is natclass.RelayUDP or natclass.RelayTCP when relaying worked both ways,
	// "" otherwise.
	Technique natclass.Technique `json:"technique,omitempty"`
	// Transport this side used to reach the relay; PeerTransport the
	// peer's.
	Transport     relay.Transport `json:"transport,omitempty"`
	PeerTransport relay.Transport `json:"peer_transport,omitempty"`
	Attempts      []RelayAttempt  `json:"attempts"`
	Relayed       string          `json:"relayed,omitempty"`      // this side's relayed address
	PeerRelayed   string          `json:"peer_relayed,omitempty"` // the peer's
	// Relay is the measurement through the relay (relay-to-relay: each
	// side's allocation sends to the other's).
	Relay *relay.Figures `json:"relay,omitempty"`
	// Direct is the same measurement on the direct path, when one works
	// over UDP.
	Direct *relay.Figures `json:"direct,omitempty"`
	// DirectTechnique is the technique whose path Direct measured.
	DirectTechnique natclass.Technique `json:"direct_technique,omitempty"`
	// DirectError says why the direct path could not be measured.
	DirectError string `json:"direct_error,omitempty"`
	// Cost compares the two, when both were measured.
	Cost  *relay.Cost `json:"cost,omitempty"`
	Error string      `json:"error,omitempty"` // why relaying failed
}

// RelaySide is one side's relay stage: the allocation, and the direct
// path kept for measuring.
type RelaySide struct {
	alloc      *relay.Allocation
	direct     net.PacketConn
	directTo   netip.AddrPort
	directTech natclass.Technique
	measure    relay.MeasureOptions
	report     RelayReport
}

// PrepareRelay allocates on the TURN server, trying UDP, then TCP, then
// TLS, each bounded by relayAllocTimeout. direct, if not nil, is the
// confirmed direct UDP path of technique tech that both sides agreed on;
// PrepareRelay takes it over (Detach) to measure it later. Call before
// the relay step; send Offer() in it.
func PrepareRelay(ctx context.Context, n transport.Net, cfg RelayConfig, direct *holepunch.Path, tech natclass.Technique) *RelaySide {
	s := &RelaySide{measure: cfg.Measure}
	if direct != nil {
		s.directTo = direct.Remote()
		s.direct = direct.Detach()
		s.directTech = tech
	}
	var tries []relay.Transport
	if !cfg.SkipUDP {
		tries = append(tries, relay.UDP)
	}
	tries = append(tries, relay.TCP)
	if cfg.TLSServer != "" {
		tries = append(tries, relay.TLS)
	}
	for _, tr := range tries {
		addr := cfg.Server
		if tr == relay.TLS {
			addr = cfg.TLSServer
		}
		a, err := relay.Allocate(ctx, relay.AllocOptions{
			Net: n, Server: addr, Transport: tr, Username: cfg.Username, Password: cfg.Password,
			TLSConfig: cfg.TLSConfig, Timeout: relayAllocTimeout, Family: cfg.Family,
		})
		at := RelayAttempt{Transport: tr}
		if err != nil {
			at.Error = err.Error()
			s.report.Attempts = append(s.report.Attempts, at)
			if ctx.Err() != nil {
				break
			}
			continue
		}
		at.AllocTimeMillis = millis.Of(a.AllocTime)
		s.report.Attempts = append(s.report.Attempts, at)
		s.alloc = a
		s.report.Transport = tr
		s.report.Relayed = a.Relayed.String()
		break
	}
	return s
}

// Offer is this side's data for the relay step.
func (s *RelaySide) Offer() RelayOffer {
	o := RelayOffer{Transport: s.report.Transport, Relayed: s.report.Relayed}
	if s.direct != nil {
		o.Direct = s.directTech
	}
	return o
}

// RelayTag derives the measurement tag both sides share from the session.
func RelayTag(sess holepunch.Session) uint64 { return binary.BigEndian.Uint64(sess.ID[:]) }

// MeasureDirect measures the kept direct path with the peer, if both
// sides hold a path of the same technique; call it right after the relay
// step, on both sides. It closes the direct path.
func (s *RelaySide) MeasureDirect(ctx context.Context, peer RelayOffer, tag uint64) {
	if s.direct == nil {
		return
	}
	defer func() {
		_ = s.direct.Close()
		s.direct = nil
	}()
	if peer.Direct == "" || peer.Direct != s.directTech {
		return
	}
	o := s.measureOptions(tag)
	f, err := relay.Measure(ctx, s.direct, net.UDPAddrFromAddrPort(s.directTo), o)
	if err != nil {
		s.report.DirectError = err.Error()
		return
	}
	s.report.Direct, s.report.DirectTechnique = &f, s.directTech
}

// MeasureRelay permits the peer's relayed address and measures the
// relay-to-relay path with the peer; call it on both sides right after a
// barrier that follows MeasureDirect. It fills the report and releases
// the allocation.
func (s *RelaySide) MeasureRelay(ctx context.Context, peer RelayOffer, tag uint64) {
	s.report.PeerTransport, s.report.PeerRelayed = peer.Transport, peer.Relayed
	if s.alloc == nil {
		s.report.Error = "no TURN allocation worked on this side"
		return
	}
	defer s.Close()
	if peer.Relayed == "" {
		s.report.Error = "the peer could not allocate a relayed address"
		return
	}
	pr, err := netip.ParseAddrPort(peer.Relayed)
	if err != nil {
		s.report.Error = "the peer sent a malformed relayed address"
		return
	}
	if err := s.alloc.Permit(ctx, pr); err != nil {
		s.report.Error = err.Error()
		return
	}
	f, err := relay.Measure(ctx, s.alloc.Conn, net.UDPAddrFromAddrPort(pr), s.measureOptions(tag))
	if err != nil {
		s.report.Error = fmt.Sprintf("relay measurement: %v", err)
		return
	}
	s.report.Relay = &f
	s.report.Technique = natclass.RelayUDP
	if s.report.Transport != relay.UDP || peer.Transport != relay.UDP {
		s.report.Technique = natclass.RelayTCP
	}
}

func (s *RelaySide) measureOptions(tag uint64) relay.MeasureOptions {
	o := s.measure
	o.Tag = tag
	return o
}

// Report is the relay stage's result; Cost is filled when both paths
// were measured.
func (s *RelaySide) Report() RelayReport {
	r := s.report
	if r.Direct != nil && r.Relay != nil {
		c := relay.Compare(*r.Direct, *r.Relay)
		r.Cost = &c
	}
	if r.Attempts == nil {
		r.Attempts = []RelayAttempt{}
	}
	return r
}

// Close releases whatever the side still holds.
func (s *RelaySide) Close() {
	if s.alloc != nil {
		_ = s.alloc.Close()
		s.alloc = nil
	}
	if s.direct != nil {
		_ = s.direct.Close()
		s.direct = nil
	}
}

// RelaySummary is the verdict's sentence for the relay stage, given
// whether a direct technique works: the relay cost when direct works and
// both were measured; otherwise which relay to use, or that nothing
// works.
func RelaySummary(direct bool, r RelayReport) string {
	switch {
	case direct && r.Cost != nil:
		return r.Cost.Summary
	case direct:
		return ""
	case r.Technique == natclass.RelayUDP:
		return fmt.Sprintf("Relay over UDP (TURN): %s", relayFigures(r.Relay))
	case r.Technique == natclass.RelayTCP:
		tr := r.Transport
		if tr == relay.UDP {
			tr = r.PeerTransport
		}
		return fmt.Sprintf("Relay over %s only (TURN; UDP to the relay is blocked): %s", tr, relayFigures(r.Relay))
	default:
		why := r.Error
		if why == "" {
			why = "no relay measured"
		}
		return "No path: no direct technique worked and the relay failed (" + why + ")"
	}
}

func relayFigures(f *relay.Figures) string {
	if f == nil {
		return "not measured"
	}
	return fmt.Sprintf("RTT %.1f ms median (p95 %.1f), %.1f Mbit/s", f.RTTMedianMillis, f.RTTP95Millis, f.ThroughputMbps)
}
