package probe

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"

	"github.com/natlab/natlab/holepunch"
	"github.com/natlab/natlab/internal/millis"
	"github.com/natlab/natlab/natclass"
)

// FamilyResult is the IPv6 stage of a probe: this host's IPv6 profile
// and a UDP hole punch over IPv6 with the peer, beside the IPv4
// techniques. On IPv6 most hosts sit behind a stateful firewall without
// NAT: simultaneous sends open it, which is exactly what this measures.
type FamilyResult struct {
	Server string            `json:"server"`         // natlab serve's IPv6 address
	Self   *natclass.Profile `json:"self,omitempty"` // this host's IPv6 profile
	// Mapped is this host's address as the server saw it; Remote the
	// peer's on the path (or the candidate tried).
	Mapped    string             `json:"mapped_address,omitempty"`
	Remote    string             `json:"remote,omitempty"`
	Technique natclass.Technique `json:"technique"`
	Measured  natclass.Outcome   `json:"measured"`
	// TimeToFirstPacketMillis and RTTMillis as for the IPv4 techniques.
	TimeToFirstPacketMillis float64 `json:"time_to_first_packet_ms,omitempty"`
	RTTMillis               float64 `json:"rtt_ms,omitempty"`
	Error                   string  `json:"error,omitempty"`
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

// profile6 measures this host over IPv6 against o.Server6; nil (and the
// reason logged) when it cannot.
func (a *agent) profile6(ctx context.Context) *natclass.Profile {
	p, err := natclass.Discover(ctx, natclass.Options{Net: a.o.Net, Servers: []string{a.o.Server6}, Family: natclass.IPv6,
		NoTCP: true, Logger: a.log})
	if err != nil || p.NATType == natclass.UDPBlocked {
		a.log.Debug("ipv6 profile", "err", err)
		return nil
	}
	return p
}

// ipv6Stage punches over IPv6 with the peer at two barriers: candidates,
// then both outcomes (a path counts only if both confirmed it). Both
// sides run it exactly when both announced IPv6 at pairing.
func (a *agent) ipv6Stage(ctx context.Context) *FamilyResult {
	fr := &FamilyResult{Server: a.o.Server6, Self: a.self6, Technique: natclass.DirectUDP, Measured: natclass.Fail}
	a.emit(Event{Stage: StageTechnique, Message: "udp over IPv6: punching"})
	var my stepData
	conn, err := a.o.Net.ListenPacket("udp6", "[::]:0")
	if err == nil {
		var srflx netip.AddrPort
		if srflx, err = holepunch.Reflexive(ctx, conn, a.srv6); err == nil {
			fr.Mapped = srflx.String()
			my.Candidates = []holepunch.Candidate{{Kind: holepunch.Srflx, Addr: srflx}}
		} else {
			_ = conn.Close()
		}
	}
	if err != nil {
		my.Err = "IPv6: " + err.Error()
	}
	var theirs stepData
	raw, berr := a.barrier(ctx, my)
	if berr == nil {
		berr = json.Unmarshal(raw, &theirs)
	}
	var path *holepunch.Path
	switch {
	case berr != nil:
		fr.Error = "peer lost: " + berr.Error()
	case my.Err != "" || theirs.Err != "" || len(theirs.Candidates) == 0:
		fr.Error = fmt.Sprintf("no IPv6 candidates: %s%s", my.Err, theirs.Err)
		if conn != nil && my.Err == "" {
			_ = conn.Close()
		}
	default:
		fr.Remote = theirs.Candidates[0].Addr.String()
		sch := holepunch.DefaultSchedule()
		sch.Opening = openingWindow(a.rz.RTT(), theirs.RTT)
		sch.Total = punchTimeout
		var res holepunch.Result
		path, res, _ = holepunch.PunchUDP(ctx, holepunch.Config{Conn: conn, Session: a.sess, Remote: theirs.Candidates,
			Timeout: punchTimeout, Schedule: sch, Technique: natclass.DirectUDP, Logger: a.log,
			// Opening packets with a low hop limit: a NAT66 or firewall
			// whose first packet from the peer arrives before its own
			// host's left falls into the conntrack trap as IPv4 NATs do.
			OpeningTTL: holepunch.DefaultOpeningTTL})
		if res.Success {
			fr.Measured, fr.Remote = natclass.Success, res.Remote.String()
			fr.TimeToFirstPacketMillis, fr.RTTMillis = millis.Of(res.TimeToFirstPacket), millis.Of(res.RTT)
		} else if res.Err != nil {
			fr.Error = res.Err.Error()
		}
	}
	a.confirm6(ctx, fr, path)
	return fr
}

// confirm6 is the stage's second barrier: the peer's outcome; the path
// is held until the peer has finished too.
func (a *agent) confirm6(ctx context.Context, fr *FamilyResult, path *holepunch.Path) {
	a.held = path
	raw, err := a.barrier(ctx, stepData{Previous: fr.Measured})
	var theirs stepData
	if err == nil {
		err = json.Unmarshal(raw, &theirs)
	}
	if fr.Measured == natclass.Success && (err != nil || theirs.Previous != natclass.Success) {
		fr.Measured, fr.Error = natclass.Fail, "the peer did not confirm the path"
	}
	a.emit(Event{Stage: StageTechnique, Outcome: fr.Measured, Data: fr, Message: "udp over IPv6: " + string(fr.Measured)})
}

// preferFamily is the verdict with IPv6 in it: a direct path beats a
// relay whatever its family, and when both families connect directly
// IPv6 is preferred, as Happy Eyeballs (RFC 8305) does; the summary says
// which and why.
func preferFamily(v Verdict, fr *FamilyResult) Verdict {
	if fr == nil {
		return v
	}
	six := "UDP hole punch over IPv6"
	if fr.RTTMillis > 0 {
		six += fmt.Sprintf(", first packet after %.0f ms, direct RTT %.1f ms", fr.TimeToFirstPacketMillis, fr.RTTMillis)
	}
	switch {
	case fr.Measured == natclass.Success && !v.Direct:
		return Verdict{Direct: true, Technique: natclass.DirectUDP, Family: "ipv6",
			Summary: "Direct P2P works over IPv6 (prefer it): " + six + "; over IPv4: " + v.Summary}
	case fr.Measured == natclass.Success:
		v.Family = "ipv6"
		v.Summary = "Direct P2P works over IPv6 and IPv4; prefer IPv6 (RFC 8305): " + six + "; over IPv4: " + v.Summary
	default:
		v.Family = "ipv4"
		v.Summary += "; IPv6: no direct path (" + fr.Error + ")"
	}
	return v
}
