package probe

import (
	"cmp"
	"context"
	"fmt"

	"github.com/natlab/natlab/natclass"
)

// FamilyResult is the IPv6 side of a probe: this host's IPv6 profile,
// the peer's IPv6 summary, and every direct technique over IPv6,
// predicted from the two measured IPv6 profiles (never from IPv4's) and
// measured with the peer, as the IPv4 techniques are. On IPv6 most hosts
// sit behind a stateful firewall without NAT: simultaneous sends open
// it, which the udp row measures.
type FamilyResult struct {
	Server string            `json:"server"`         // natlab serve's IPv6 address
	Self   *natclass.Profile `json:"self,omitempty"` // this host's IPv6 profile
	// Peer is the peer's IPv6 summary, as it sent it, with the routers
	// its trace found toward this host's public IPv6 address.
	Peer *natclass.Summary `json:"peer,omitempty"`
	// Path is this side's trace toward the peer's public IPv6 address
	// (hop limits), as Report.Path is over IPv4.
	Path *natclass.PeerPath `json:"path,omitempty"`
	// Mapped is this host's address as the server saw it; Remote the
	// peer's on the path of Technique (or the candidate tried).
	Mapped string `json:"mapped_address,omitempty"`
	Remote string `json:"remote,omitempty"`
	// Technique is the most preferred IPv6 technique that worked (udp
	// when none did), Measured its outcome, and the figures its.
	Technique natclass.Technique `json:"technique"`
	Measured  natclass.Outcome   `json:"measured"`
	// TimeToFirstPacketMillis and RTTMillis as for the IPv4 techniques.
	TimeToFirstPacketMillis float64 `json:"time_to_first_packet_ms,omitempty"`
	RTTMillis               float64 `json:"rtt_ms,omitempty"`
	Error                   string  `json:"error,omitempty"`
	// Techniques are the IPv6 rows, in order of preference, agreed
	// with the peer.
	Techniques []TechniqueResult `json:"techniques,omitempty"`
	// Relay is the IPv6 relay (TURN over IPv6, an IPv6 relayed address)
	// measured with the peer, as Report.Relay is IPv4's.
	Relay *RelayReport `json:"relay,omitempty"`
}

// startProfile6 resolves Options.Server6 and profiles this host over IPv6
// aside, beside the IPv4 profile; wait returns once it is done.
func (a *agent) startProfile6(ctx context.Context) (wait func(), err error) {
	if a.o.Server6 == "" {
		return func() {}, nil
	}
	ua, err := a.o.Net.ResolveUDPAddr("udp6", a.o.Server6)
	if err != nil {
		return nil, fmt.Errorf("IPv6 server %s: %w", a.o.Server6, err)
	}
	a.srv6 = ua.AddrPort()
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.self6 = a.profile6(ctx)
	}()
	return func() { <-done }, nil
}

// profile6 measures this host over IPv6 against o.Server6, its TCP
// too (the IPv6 tcp row is predicted from both sides' TCP profiles over
// IPv6); nil (and the reason logged) when it cannot.
func (a *agent) profile6(ctx context.Context) *natclass.Profile {
	p, err := natclass.Discover(ctx, natclass.Options{Net: a.o.Net, Servers: []string{a.o.Server6}, Family: natclass.IPv6, Logger: a.log})
	// A host whose IPv6 UDP is blocked but whose TCP reached the server
	// still runs the plan: its UDP rows fail as predicted, and its TCP
	// and relay (over TCP) rows are what it has.
	if err != nil || (p.NATType == natclass.UDPBlocked && (p.TCP == nil || p.TCP.Reached != natclass.Yes)) {
		a.log.Debug("ipv6 profile", "err", err)
		return nil
	}
	return p
}

// runs6 reports whether both sides run the IPv6 plan: both were
// profiled over IPv6 and sent their IPv6 summary at pairing.
func (a *agent) runs6() bool { return a.self6 != nil && a.peer6 != nil }

// ipv6Plan runs every direct technique over IPv6 with the peer, predicted
// from both sides' IPv6 summaries, exactly as the IPv4 plan runs.
func (a *agent) ipv6Plan(ctx context.Context) (*FamilyResult, error) {
	if err := a.sharePath6(ctx); err != nil {
		return nil, err
	}
	f := a.family6()
	preds := a.predictions(f)
	for i, p := range preds {
		if p.Technique == natclass.MappedUDP && p.Outcome == natclass.Skipped {
			// Predict saw no port mapping in either IPv6 summary: it is
			// never asked over IPv6.
			preds[i].Reason = "port mapping is asked over IPv4 only (PCP, NAT-PMP, UPnP-IGD): no IPv6 pinhole requested"
		}
	}
	ts, err := a.runPlan(ctx, f, preds)
	if err != nil {
		return nil, err
	}
	peer := f.peer
	fr := &FamilyResult{Server: a.o.Server6, Self: a.self6, Peer: &peer, Path: a.path6, Mapped: a.self6.MappedAddress, Techniques: ts}
	fr.best()
	return fr, nil
}

// best fills the v1 fields from the rows: the most preferred technique
// that worked, else the udp row and why it failed.
func (fr *FamilyResult) best() {
	fr.Technique, fr.Measured = natclass.DirectUDP, natclass.Fail
	for _, t := range fr.Techniques {
		if t.Measured == natclass.Success {
			fr.Technique, fr.Measured, fr.Remote = t.Technique, t.Measured, t.Remote
			fr.TimeToFirstPacketMillis, fr.RTTMillis, fr.Error = t.TimeToFirstPacketMillis, t.RTTMillis, ""
			return
		}
	}
	for _, t := range fr.Techniques {
		if t.Technique == natclass.DirectUDP {
			fr.Remote, fr.Error = t.Remote, cmp.Or(t.Error, t.Reason)
		}
	}
}

// preferFamily is the verdict with IPv6 in it: a direct path beats a
// relay whatever its family, and when both families connect directly
// IPv6 is preferred, as Happy Eyeballs (RFC 8305) does; the summary says
// which and why.
func preferFamily(v Verdict, fr *FamilyResult) Verdict {
	if fr == nil {
		return v
	}
	six := fr.Technique.Name() + " over IPv6"
	if fr.RTTMillis > 0 {
		six += fmt.Sprintf(", first packet after %.0f ms, direct RTT %.1f ms", fr.TimeToFirstPacketMillis, fr.RTTMillis)
	}
	switch {
	case fr.Measured == natclass.Success && !v.Direct:
		return Verdict{Direct: true, Technique: fr.Technique, Family: familyIPv6,
			Summary: "Direct P2P works over IPv6 (prefer it): " + six + "; over IPv4: " + v.Summary}
	case fr.Measured == natclass.Success:
		v.Family = familyIPv6
		v.Technique = fr.Technique
		v.Summary = "Direct P2P works over IPv6 and IPv4; prefer IPv6 (RFC 8305): " + six + "; over IPv4: " + v.Summary
	default:
		v.Family = familyIPv4
		v.Summary += "; IPv6: no direct path (" + fr.Error + ")"
	}
	return v
}
