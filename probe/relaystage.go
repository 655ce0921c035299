package probe

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"sync"

	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/relay"
)

// relay6Config is the IPv6 relay's configuration: Options.Relay6, else
// the IPv4 relay's credentials on natlab serve's IPv6 address (Server6),
// asking for an IPv6 relayed address. nil without a relay stage or
// without Server6.
func relay6Config(o Options) *RelayConfig {
	if o.Relay == nil {
		return nil
	}
	if o.Relay6 != nil {
		c := *o.Relay6
		c.Family = relay.IPv6
		return &c
	}
	if o.Server6 == "" {
		return nil
	}
	c := *o.Relay
	c.Server, c.Family = o.Server6, relay.IPv6
	if ap, err := netip.ParseAddrPort(c.TLSServer); err == nil && ap.Addr().Unmap().Is4() {
		c.TLSServer = "" // an IPv4 literal has no IPv6 side to try
	}
	return &c
}

// relayStage allocates on the TURN server and, with the peer, measures the
// kept direct path (if both still hold the agreed one) and then the relay,
// at two barriers: offers, then between the measurements (so the bursts
// do not overlap). When the IPv6 techniques ran, it also allocates an
// IPv6 relay beside the IPv4 one and measures it after (relay6); the
// IPv6 report is nil when it did not run.
func (a *agent) relayStage(ctx context.Context, rep *Report) (RelayReport, *RelayReport, error) {
	msg := "allocating on the TURN relay"
	if rep.IPv6 != nil && relay6Config(a.o) != nil {
		msg += " over IPv4 and IPv6"
	}
	a.emit(Event{Stage: StageRelay, Message: msg})
	direct, tech := a.direct, a.directTech
	if direct != nil && (rep.Verdict.Technique != tech || !rep.Verdict.Direct) {
		// The peer did not confirm this path: measuring it would hang.
		direct, tech = nil, ""
	}
	direct6, tech6 := a.direct6, a.direct6Tech
	if fr := rep.IPv6; direct6 != nil && (fr == nil || fr.Technique != tech6 || fr.Measured != natclass.Success) {
		direct6, tech6 = nil, ""
	}
	cfg := a.relayVia(*a.o.Relay)
	cfg.SkipUDP = cfg.SkipUDP || a.self.NATType == natclass.UDPBlocked
	var rs6 *RelaySide
	var prep sync.WaitGroup
	if cfg6 := relay6Config(a.o); cfg6 != nil && rep.IPv6 != nil {
		cfg6.SkipUDP = cfg6.SkipUDP || a.self6 == nil || a.self6.NATType == natclass.UDPBlocked
		prep.Go(func() { rs6 = PrepareRelay(ctx, a.o.Net, *cfg6, direct6, tech6) })
	}
	rs := PrepareRelay(ctx, a.o.Net, cfg, direct, tech)
	prep.Wait()
	// PrepareRelay owns the paths it took; the others go.
	if direct != nil {
		a.direct = nil
	}
	if rs6 != nil && direct6 != nil {
		a.direct6 = nil
	}
	a.closeDirect()
	defer rs.Close()
	mine := rs.Offer()
	if rs6 != nil {
		defer rs6.Close()
		o6 := rs6.Offer()
		mine.V6 = &o6
	}
	raw, err := a.barrier(ctx, mine)
	if err != nil {
		return RelayReport{}, nil, fmt.Errorf("relay step with the peer: %w", err)
	}
	var peer RelayOffer
	if err := json.Unmarshal(raw, &peer); err != nil {
		return RelayReport{}, nil, fmt.Errorf("relay step: malformed peer offer: %w", err)
	}
	tag := RelayTag(a.sess)
	rs.MeasureDirect(ctx, peer, tag)
	if _, err := a.barrier(ctx, struct{}{}); err != nil {
		return RelayReport{}, nil, fmt.Errorf("relay step with the peer: %w", err)
	}
	rs.MeasureRelay(ctx, peer, tag)
	rr := rs.Report()
	a.emit(Event{Stage: StageRelay, Message: RelaySummary(rep.Verdict.Direct, rr), Data: rr})
	rr6, err := a.relay6(ctx, rs6, peer.V6, tag)
	return rr, rr6, err
}

// relay6 measures with the peer, when both sides offered an IPv6 relay
// (a peer without one offers none, and neither side takes these
// barriers), the IPv6 direct path both kept, if any, then the IPv6 relay,
// each after a barrier so no two bursts overlap.
func (a *agent) relay6(ctx context.Context, rs6 *RelaySide, peer *RelayOffer, tag uint64) (*RelayReport, error) {
	if rs6 == nil {
		return nil, nil
	}
	if peer == nil {
		rs6.report.Error = errNoPeerRelay6
		r := rs6.Report()
		return &r, nil
	}
	tag ^= relayTag6
	for _, measure := range []func(context.Context, RelayOffer, uint64){rs6.MeasureDirect, rs6.MeasureRelay} {
		if _, err := a.barrier(ctx, struct{}{}); err != nil {
			return nil, fmt.Errorf("IPv6 relay step with the peer: %w", err)
		}
		measure(ctx, *peer, tag)
	}
	r := rs6.Report()
	a.emit(Event{Stage: StageRelay, Family: familyIPv6, Message: "over IPv6: " + RelaySummary(r.Cost != nil, r), Data: r})
	return &r, nil
}

// errNoPeerRelay6 is the IPv6 relay's error when the peer runs the IPv6
// plan but has no IPv6 relay stage (an older natlab): the row is then
// skipped, not failed.
const errNoPeerRelay6 = "the peer has no IPv6 relay stage"

// relayTag6 sets the IPv6 relay's measurement tag apart from the IPv4
// relay's, so a late IPv4 packet is never counted over IPv6.
const relayTag6 = 6

// relayReports runs the relay stage and puts it in the report: the
// relay row last among the techniques of its family, and the verdict.
func (a *agent) relayReports(ctx context.Context, rep *Report) error {
	rr, rr6, err := a.relayStage(ctx, rep)
	if err != nil {
		return err
	}
	rep.Relay = &rr
	rep.Techniques = append(rep.Techniques, relayRow(a.summary(), a.peer, rr))
	rep.Verdict = relayVerdict(rep.Verdict, rr)
	if rr6 != nil {
		// Predicted from the IPv6 profiles only: a side whose IPv6 UDP is
		// blocked reaches the relay over TCP or not at all.
		var peer6 natclass.Summary
		if rep.IPv6.Peer != nil {
			peer6 = *rep.IPv6.Peer
		}
		self6 := a.summary6()
		row := relayRow(self6, peer6, *rr6)
		if rr6.Error == errNoPeerRelay6 {
			row.Measured = natclass.Skipped
		}
		rep.IPv6.Relay = rr6
		rep.IPv6.Techniques = append(rep.IPv6.Techniques, row)
	}
	return nil
}

// relayVerdict adds the relay stage to the verdict: the cost of relaying
// when direct works, else which relay to use, or that nothing works.
func relayVerdict(v Verdict, r RelayReport) Verdict {
	line := RelaySummary(v.Direct, r)
	switch {
	case v.Direct && line != "":
		v.Summary += "; " + line
	case !v.Direct && r.Technique != "":
		v.Technique, v.Summary = r.Technique, line
	case !v.Direct:
		v.Summary = line
	}
	return v
}

// relayFamilies is the verdict with both relays in it: when no direct
// path works in either family it names the relay to use and its family
// (IPv6 when both work, as for direct paths, RFC 8305), with the other
// family's relay after it; when IPv6 is direct, it adds what the IPv6
// relay would cost against that path.
func relayFamilies(v Verdict, r4 *RelayReport, r6 *RelayReport) Verdict {
	if v.Direct && v.Family == familyIPv6 && r6 != nil && r6.Cost != nil {
		v.Summary += "; over IPv6 " + r6.Cost.Summary
	}
	if v.Direct || r4 == nil || r6 == nil {
		return v
	}
	const none = "Relay required (no direct path over IPv4 or IPv6): "
	six, four := relayBrief(*r6), relayBrief(*r4)
	switch {
	case r6.Technique != "" && r4.Technique != "":
		return Verdict{Technique: r6.Technique, Family: "ipv6", Summary: none + "use IPv6 (preferred, RFC 8305): " + six + "; IPv4: " + four}
	case r6.Technique != "":
		return Verdict{Technique: r6.Technique, Family: "ipv6", Summary: none + "use IPv6: " + six + "; IPv4: " + four}
	case r4.Technique != "":
		return Verdict{Technique: r4.Technique, Family: "ipv4", Summary: none + "use IPv4: " + four + "; IPv6: " + six}
	}
	return Verdict{Summary: "No path: no direct technique and no relay worked over IPv4 or IPv6 (IPv4: " + four + "; IPv6: " + six + ")"}
}

// relayBrief is one family's relay in the verdict: the relay and its
// figures, or why there is none.
func relayBrief(r RelayReport) string {
	if r.Technique != "" {
		return RelaySummary(false, r)
	}
	return "no relay (" + cmp.Or(r.Error, "no relay measured") + ")"
}

// relayRow is the relay stage as one more technique row, so every view
// (table, chart, metrics, matrix) shows it next to the direct ones. Its
// prediction: a TURN relay reached over UDP works unless a side's UDP is
// blocked, and then only over TCP or TLS, which that side's TCP profile
// says it reaches (or not, or was not measured).
func relayRow(self, peer natclass.Summary, r RelayReport) TechniqueResult {
	p := natclass.PredictRelay(self, peer)
	tr := TechniqueResult{Technique: p.Technique, Predicted: p.Outcome, Measured: natclass.Fail,
		Reason: p.Reason, Attempts: len(r.Attempts), Error: r.Error}
	if r.Technique != "" && r.Relay != nil {
		tr.Technique, tr.Measured = r.Technique, natclass.Success
		tr.RTTMillis = r.Relay.RTTMedianMillis
		tr.Remote = r.PeerRelayed
		if r.Technique != natclass.RelayUDP && tr.Reason == "both sides reach the relay over UDP" {
			// The relay works, but not the way predicted.
			tr.Predicted = natclass.Fail
		}
	}
	return tr
}
