package natclass

import "fmt"

// Routers with nothing between them. A low-TTL opening packet keeps a
// peer's early packets from reaching this host's router before this
// host's own packet left (the conntrack trap, README "natlab probe") only if it expires
// at a router between the two NATs. When a side's trace (TracePeer) found
// none, every packet toward the peer reaches the peer's router, and the
// first packet decides: one that arrives before the local host's own
// packet left is refused by a filter that has not seen the local host
// send yet, and its conntrack entry moves the local host's port for that
// peer (or, at an allow-set restricted cone, keeps admitting nothing from
// that flow) until it expires.
//
// What still works, measured on the kernel lab's shared segment:
//   - a filter that admits any sender (EIF) refuses nothing;
//   - a filter that admits by address (ADF) admits the peer from any port
//     once its host has sent to the peer's address: that side opens first
//     and the other waits, so the other's moved port is still admitted;
//   - two filters that look at the port (APDF) refuse the moved port
//     whoever opens first: punching fails. Only if both first packets
//     leave their routers before either arrives (they cross) is nothing
//     trapped, a race no application can schedule; so A opens and B
//     holds, and the trap always springs.
//
// The trap needs the early packet to end at the router itself: a NAT's
// public address is its own, so the router receives the packet and its
// conntrack keeps the flow. A router that does not translate (an IPv6
// stateful firewall) or translates only the prefix (NPTv6) forwards the
// packet toward the host's own address, and its filter drops it before
// conntrack confirms anything: no state, no moved port. Measured on the
// shared segment with IPv6: when only one side's router receives the
// other's packets itself, that side opening first makes the punch work
// whatever the filters; sending at once, it worked or not by who was
// first.

// Adjacent reports whether a side measured no router between its network
// and the peer's public address.
func Adjacent(a, b Summary) bool {
	for _, s := range []Summary{a, b} {
		if s.RoutersBetween != nil && *s.RoutersBetween == 0 {
			return true
		}
	}
	return false
}

// onSegment revises a punching prediction for adjacent routers. UDP
// techniques read the UDP filters; TCP keeps its prediction (Linux lets a
// new SYN take over the 4-tuple of a closed TCP conntrack entry, so TCP's
// trap clears itself; the TCP cells of both topologies measure it).
func onSegment(p Prediction, a, b Summary) Prediction {
	switch p.Technique {
	case DirectUDP, PredictUDP, Birthday:
	default:
		return p
	}
	if p.Outcome != Success {
		return p
	}
	const lead = "nothing lies between the routers (routers_between 0), so the first packet decides: "
	fa, fb := a.Filtering, b.Filtering
	ta, tb := receivesItself(a), receivesItself(b)
	switch {
	case fa == EndpointIndependent || fb == EndpointIndependent:
		side := "A"
		if fb == EndpointIndependent {
			side = "B"
		}
		p.Reason += "; " + side + "'s filter admits any sender, so no early packet is refused"
	case !ta && !tb:
		p.Reason += "; neither router receives the other's packets itself (no NAT to its own address), so an early packet is dropped by a filter that keeps no state of it"
	case ta != tb:
		opener, other := "A", "B"
		if tb {
			opener, other = "B", "A"
		}
		p.Opener = opener
		p.Reason = fmt.Sprintf("%s%s's router receives %s's packets itself (its public address is its own), while %s's forwards them to a filter that keeps no state of what it drops: %s opens first and %s waits", lead, opener, other, other, opener, other)
	case fa == AddressDependent && fb == AddressDependent:
		p.Reason += "; both filters admit by address, so a port moved by an early packet is still admitted"
	case fa == AddressDependent || fb == AddressDependent:
		opener, other := "A", "B"
		if fb == AddressDependent {
			opener, other = "B", "A"
		}
		p.Opener = opener
		p.Reason = fmt.Sprintf("%s%s filters by address only, so %s opens first and %s waits: %s's packet moves %s's port at %s's router, and %s's packet from the new port passes %s's filter", lead, opener, opener, other, opener, other, other, other, opener)
	default:
		// Sent at once, the two first packets sometimes cross (sends
		// under ~15 µs apart on the shared segment: 3 of 600 raw tries,
		// about one probe run of 25), and nothing is trapped: a race no
		// application can schedule. A opens and B holds, so the trap
		// always springs.
		p.Outcome = Fail
		p.Opener = "A"
		p.Reason = lead + "A opens first and B waits, and A's first packet, refused by B's router, moves B's port (conntrack); both filters look at the port, so neither admits the moved port"
	}
	return p
}

// receivesItself reports whether packets sent to s's public address end
// at s's router (a NAT to the router's own address), where an early one
// leaves conntrack state; false for a host without NAT and behind NPTv6,
// whose router forwards them.
func receivesItself(s Summary) bool {
	switch {
	case s.NATType == Open || s.NATType == SymmetricFirewall:
		return false
	case s.Translation == TranslationNPTv6:
		return false
	}
	return true
}
