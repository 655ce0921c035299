package probe

import (
	"context"
	"net/netip"

	"github.com/natlab/natlab/holepunch"
	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/portmap"
)

// Address families in reports and events.
const (
	familyIPv4 = "ipv4"
	familyIPv6 = "ipv6"
)

// family is what a technique plan runs over: one address family's socket
// networks, natlab serve's address in it, this host's profile and both
// sides' summaries measured in it, and the plan's barrier bookkeeping.
// The IPv4 and the IPv6 plan run the same code with their own family.
type family struct {
	name     string // familyIPv4 or familyIPv6
	udp, tcp string // socket networks: "udp4", "tcp4" or "udp6", "tcp6"
	wildcard string // the unspecified address to bind
	srv      netip.AddrPort
	self     *natclass.Profile
	// pm is what this host's gateway maps (IPv4 only: PCP, NAT-PMP and
	// UPnP-IGD are asked over IPv4).
	pm         *portmap.Report
	mine, peer natclass.Summary
	// start is the barrier step before the plan's first technique;
	// peerOutcomes[k-1] is the peer's measured outcome of technique k.
	start        int
	peerOutcomes []natclass.Outcome
	// nat64, on an IPv6-only host, is the NAT64 prefix the IPv4 plan
	// goes through (nat64.go).
	nat64 netip.Prefix
}

// v6 reports whether the plan runs over IPv6.
func (f *family) v6() bool { return f.name == familyIPv6 }

// family4 is the IPv4 plan's family: the profile, port mapping and path
// measured at start-up.
func (a *agent) family4() *family {
	f := &family{name: familyIPv4, udp: "udp4", tcp: "tcp4", wildcard: "0.0.0.0:0",
		srv: a.srv, self: a.self, pm: a.pm, mine: a.summary(), peer: a.peer, start: a.step}
	f.through64(a.nat64)
	return f
}

// family6 is the IPv6 plan's family: both sides' IPv6 summaries, nothing
// of IPv4's.
func (a *agent) family6() *family {
	return &family{name: familyIPv6, udp: "udp6", tcp: "tcp6", wildcard: "[::]:0",
		srv: a.srv6, self: a.self6, mine: a.summary6(), peer: *a.peer6, start: a.step}
}

// summary6 is what the peer learns of this host over IPv6 (nil without
// an IPv6 profile). No port mapping: it is asked over IPv4 only.
func (a *agent) summary6() natclass.Summary {
	s := HostSummary(a.self6, nil, a.tcp)
	if a.path6 != nil {
		s.RoutersBetween = a.path6.RoutersBetween
	}
	return s
}

// sharePath6 is sharePath over IPv6: the trace with hop limits toward
// the peer's public IPv6 address, from this host's IPv6 opening hop
// limit, and the counts swapped at a barrier that both sides run when
// both run the IPv6 plan. The IPv6 predictions then read both counts
// (natclass.Adjacent), as the IPv4 ones do.
func (a *agent) sharePath6(ctx context.Context) error {
	pp, theirs, err := a.swapPath(ctx, a.peer6.Mapped, openingTTL(a.self6), familyIPv6)
	if err != nil {
		return err
	}
	a.path6, a.peer6.RoutersBetween = pp, theirs
	return nil
}

// mapped reports whether this host's gateway maps ports in f.
func (f *family) mapped() bool { return gatewayMaps(f.pm) }

// adjacent reports whether either side's trace found no router between
// the two NATs: then no TTL expires between them.
func (f *family) adjacent() bool { return natclass.Adjacent(f.mine, f.peer) }

// openingTTL is the plan's opening TTL (over IPv6 the hop limit).
func (f *family) openingTTL() int { return openingTTL(f.self) }

// openingTTL passes this host's own NATs, as profiled in p, and expires
// before the peer's: one more than the measured NAT depth, or
// holepunch's default for one NAT when the depth is unknown.
func openingTTL(p *natclass.Profile) int {
	if ttl := p.OpeningTTL(); ttl > 0 {
		return ttl
	}
	return holepunch.DefaultOpeningTTL
}

// hostCandidates are this host's addresses in f, at port.
func (f *family) hostCandidates(a *agent, port uint16) []holepunch.Candidate {
	if f.v6() || f.nat64.IsValid() {
		// Behind a NAT64 the IPv4 plan's sockets are IPv6 and the LAN
		// is IPv6: a peer behind the same NAT64 is reached there.
		return holepunch.HostCandidates6(a.o.Net, port)
	}
	return holepunch.HostCandidates(a.o.Net, port)
}

// predictions are both sides' predictions in f, computed the same on
// both: A's summary always first.
func (a *agent) predictions(f *family) []natclass.Prediction {
	sa, sb := f.mine, f.peer
	if a.side == holepunch.SideB {
		sa, sb = sb, sa
	}
	return natclass.Predict(sa, sb)
}
