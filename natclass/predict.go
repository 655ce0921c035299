package natclass

import (
	"fmt"
	"net/netip"
)

// Outcome of a technique, predicted or measured.
type Outcome string

// Outcomes; the strings are part of the JSON schema.
const (
	Success Outcome = "success"
	Fail    Outcome = "fail"
	Skipped Outcome = "skipped" // not applicable to this pair (or this backend)
	// UnknownOutcome is a prediction without the measurements it needs
	// (a peer whose TCP profile was not measured): the technique is tried,
	// and only the measurement says.
	UnknownOutcome Outcome = "unknown"
)

// Summary is the part of a profile a peer needs to predict and punch: it
// travels through the rendezvous, so it is small.
type Summary struct {
	NATType    NATType    `json:"nat_type"`
	Mapping    Behavior   `json:"mapping,omitempty"`
	Filtering  Behavior   `json:"filtering,omitempty"`
	Allocation Allocation `json:"allocation,omitempty"`
	Step       int        `json:"step,omitempty"`
	// Mapped is the public address (ip:port) a STUN server saw.
	Mapped string `json:"mapped,omitempty"`
	// TCP says whether the peer can try TCP at all (its network stack
	// supports it).
	TCP bool `json:"tcp"`
	// TCPProfile is the peer's measured TCP behaviour; nil when it was
	// not measured (or the peer predates the measurement).
	TCPProfile *TCPSummary `json:"tcp_profile,omitempty"`
	// PortMapping says the peer's gateway maps ports on request (and, when
	// it was checked, that a mapping let traffic in).
	PortMapping bool `json:"port_mapping,omitempty"`
	// RoutersBetween is how many routers the peer's trace found between
	// its own network and this side's public address (TracePeer); nil
	// when not measured.
	RoutersBetween *int `json:"routers_between,omitempty"`
	// Translation is how an IPv6 (or NAT64) profile saw the address
	// translated (Profile.Translation): a prefix translation (NPTv6)
	// keeps the host's own address behind the router, which then
	// forwards what is sent to it, as a firewall does.
	Translation string `json:"ipv6_translation,omitempty"`
}

// TCPSummary is the part of a TCP profile a peer needs to predict TCP.
type TCPSummary struct {
	Reached    Tri        `json:"reached"`
	Mapping    Behavior   `json:"mapping,omitempty"`
	Filtering  Behavior   `json:"filtering,omitempty"`
	Allocation Allocation `json:"allocation,omitempty"`
	Mapped     string     `json:"mapped,omitempty"`
}

// Summary returns the profile's summary; tcp is whether the host can try
// TCP.
func (p *Profile) Summary(tcp bool) Summary {
	s := Summary{NATType: p.NATType, Mapping: p.Mapping, Filtering: p.Filtering, Mapped: p.MappedAddress, TCP: tcp, Translation: p.Translation}
	if p.PortAllocation != nil {
		s.Allocation, s.Step = p.PortAllocation.Pattern, p.PortAllocation.Step
	}
	if t := p.TCP; t != nil {
		s.TCPProfile = &TCPSummary{Reached: t.Reached, Mapping: t.Mapping, Filtering: t.Filtering, Mapped: t.MappedAddress}
		if t.PortAllocation != nil {
			s.TCPProfile.Allocation = t.PortAllocation.Pattern
		}
	}
	return s
}

// Prediction is the expected outcome of one technique, with the reason in
// words a network engineer would use.
type Prediction struct {
	Technique Technique `json:"technique"`
	Outcome   Outcome   `json:"outcome"`
	Reason    string    `json:"reason"`
	// Opener, when set ("A" or "B"), is the side that sends first; the
	// other sends nothing to the peer until the opening window has
	// passed. Set where nothing lies between the routers, so the first
	// packet decides (see Adjacent).
	Opener string `json:"opener,omitempty"`
}

// Predict returns, for each technique in order of preference, what the two
// profiles say will happen. It is symmetric: Predict(a, b) and
// Predict(b, a) give the same outcomes.
func Predict(a, b Summary) []Prediction {
	out := make([]Prediction, 0, len(Techniques))
	for _, t := range Techniques {
		o, why := predict(t, a, b)
		p := Prediction{Technique: t, Outcome: o, Reason: why}
		if Adjacent(a, b) {
			p = onSegment(p, a, b)
		}
		out = append(out, p)
	}
	return out
}

func blocked(s Summary) bool { return s.NATType == UDPBlocked }

// known reports whether the UDP profile is complete enough to predict.
func known(s Summary) bool { return s.Mapping != "" && s.Filtering != "" }

// eim: the mapping toward the peer is the one the STUN server saw.
func eim(s Summary) bool { return s.Mapping == EndpointIndependent }

func predict(t Technique, a, b Summary) (Outcome, string) {
	switch t {
	case SameLAN:
		return predictSameLAN(a, b)
	case DirectTCP:
		return predictTCP(a, b)
	}
	for _, s := range []struct {
		name string
		Summary
	}{{"A", a}, {"B", b}} {
		if blocked(s.Summary) {
			return Fail, fmt.Sprintf("%s's network blocks UDP", s.name)
		}
		if !known(s.Summary) {
			return Fail, fmt.Sprintf("%s's NAT behaviour is unknown", s.name)
		}
	}
	switch t {
	case DirectUDP:
		return predictUDP(a, b)
	case PredictUDP:
		return predictSequential(a, b)
	case Birthday:
		return predictBirthday(a, b)
	case MappedUDP:
		return predictMapped(a, b)
	}
	return Skipped, "unknown technique"
}

func publicIP(s Summary) netip.Addr {
	ap, err := netip.ParseAddrPort(s.Mapped)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr()
}

func predictSameLAN(a, b Summary) (Outcome, string) {
	ia, ib := publicIP(a), publicIP(b)
	if !ia.IsValid() || !ib.IsValid() || ia != ib {
		return Skipped, "different public addresses: not behind one NAT"
	}
	return Success, "same public address: host candidates should reach each other on the LAN"
}

// behaviour is a NAT's mapping and filtering for one protocol.
type behaviour struct{ mapping, filtering Behavior }

func (b behaviour) eim() bool { return b.mapping == EndpointIndependent }

func udpOf(s Summary) behaviour { return behaviour{s.Mapping, s.Filtering} }

// predictUDP: plain punching succeeds when each side's packets can get
// through the other's filter. An EIM side's address is the srflx the peer
// probes; an APDM side's new mapping is unknown, so its packets get through
// only a filter that does not look at the port (EIF, or ADF once the filter
// side has sent to its IP), and the reply then goes peer-reflexive.
func predictUDP(a, b Summary) (Outcome, string) {
	return predictPunch(udpOf(a), udpOf(b), "srflx", "peer-reflexive")
}

// predictPunch is the punching rule for one protocol's behaviours; addr
// names where an EIM side is reached, reflexive how the answer to an
// APDM side's new mapping goes.
func predictPunch(a, b behaviour, addr, reflexive string) (Outcome, string) {
	switch {
	case a.eim() && b.eim():
		return Success, fmt.Sprintf("both mappings are endpoint-independent: each side's %s is where the other's packets arrive", addr)
	case !a.eim() && !b.eim():
		return Fail, "both mappings depend on the destination: neither side knows the port the other's NAT will use"
	}
	cone, sn, cn := b, "A", "B"
	if a.eim() {
		cone, sn, cn = a, "B", "A"
	}
	if cone.filtering == AddressAndPortDependent {
		return Fail, fmt.Sprintf("%s's mapping depends on the destination and %s filters by port: %s's packets arrive from a port %s never sent to", sn, cn, sn, cn)
	}
	return Success, fmt.Sprintf("%s's filter (%s) admits %s's new mapping; %s answers it %s", cn, cone.filtering, sn, cn, reflexive)
}

// predictSequential: port prediction needs one sequential side and an EIM
// peer, whose single srflx is the destination the sequential side opens
// exactly one new mapping toward.
func predictSequential(a, b Summary) (Outcome, string) {
	seqA := !eim(a) && a.Allocation == Sequential
	seqB := !eim(b) && b.Allocation == Sequential
	switch {
	case !seqA && !seqB:
		return Skipped, "no side has a destination-dependent sequential allocator"
	case seqA && seqB:
		return Fail, "both sides are sequential symmetric NATs: each probe toward a predicted port burns a port of its own"
	}
	seq, other, sn, on := a, b, "A", "B"
	if seqB {
		seq, other, sn, on = b, a, "B", "A"
	}
	if !eim(other) {
		return Fail, fmt.Sprintf("%s's mapping also depends on the destination: no fixed target for %s's predicted ports", on, sn)
	}
	return Success, fmt.Sprintf("%s allocates ports sequentially (step %d): %s probes the next ports after its srflx", sn, seq.Step, on)
}

// predictBirthday: birthday probing needs one random symmetric side and an
// EIM peer that scans the random side's ports.
func predictBirthday(a, b Summary) (Outcome, string) {
	rndA := !eim(a) && a.Allocation == Random
	rndB := !eim(b) && b.Allocation == Random
	switch {
	case !rndA && !rndB:
		return Skipped, "no side has a destination-dependent random allocator"
	case rndA && rndB:
		return Fail, "both sides allocate random ports per destination: nothing to meet"
	}
	rn, on, other := "A", "B", b
	if rndB {
		rn, on, other = "B", "A", a
	}
	if !eim(other) {
		return Fail, fmt.Sprintf("%s's mapping also depends on the destination: %s's many mappings have no fixed target", on, rn)
	}
	return Success, fmt.Sprintf("%s opens many mappings toward %s, which scans %s's ports until two meet", rn, on, rn)
}

// predictTCP: simultaneous open follows the punching rule, applied to
// each side's measured TCP behaviour (RFC 5382) and nothing else: routers
// often give UDP a cone from explicit rules and TCP plain masquerade, so
// the UDP profile says nothing about TCP. A side whose TCP was not
// measured makes the outcome unknown; one that cannot reach the server
// over TCP fails.
func predictTCP(a, b Summary) (Outcome, string) {
	if !a.TCP || !b.TCP {
		return Skipped, "TCP is not available on both sides (the in-process lab is UDP only)"
	}
	var tb [2]behaviour
	for i, s := range []struct {
		name string
		Summary
	}{{"A", a}, {"B", b}} {
		t := s.TCPProfile
		switch {
		case t == nil || t.Reached == NotChecked:
			return UnknownOutcome, fmt.Sprintf("%s's TCP NAT behaviour was not measured", s.name)
		case t.Reached == No:
			return Fail, fmt.Sprintf("%s reaches no server over TCP: its network blocks TCP", s.name)
		case t.Mapping == "" || t.Filtering == "":
			return UnknownOutcome, fmt.Sprintf("%s's TCP NAT behaviour is only partly measured", s.name)
		}
		tb[i] = behaviour{t.Mapping, t.Filtering}
	}
	o, why := predictPunch(tb[0], tb[1], "TCP srflx", "on the listening port")
	return o, "TCP profiles: " + why
}

// predictMapped: a mapped port is reachable at a known address with
// endpoint-independent filtering, so the other side's packets get in from
// whatever port its NAT picks, and the mapped side answers them
// peer-reflexive. One mapped side is enough, even for symmetric NATs.
func predictMapped(a, b Summary) (Outcome, string) {
	switch {
	case a.PortMapping:
		return Success, "A maps a port on its gateway: B's packets reach it from any port and A answers peer-reflexive"
	case b.PortMapping:
		return Success, "B maps a port on its gateway: A's packets reach it from any port and B answers peer-reflexive"
	}
	return Skipped, "no gateway maps ports (UPnP-IGD, NAT-PMP, PCP)"
}

// PredictRelay is the relay stage's prediction for two hosts: a TURN
// relay reached over UDP works unless a side's UDP is blocked, and then
// only over TCP or TLS, which that side's TCP profile says it reaches (or
// not, or was not measured).
func PredictRelay(a, b Summary) Prediction {
	p := Prediction{Technique: RelayUDP, Outcome: Success, Reason: "both sides reach the relay over UDP"}
	for _, s := range []Summary{a, b} {
		if s.NATType != UDPBlocked {
			continue
		}
		p.Technique = RelayTCP
		switch t := s.TCPProfile; {
		case t == nil || t.Reached == NotChecked:
			p.Outcome, p.Reason = UnknownOutcome, "a side's UDP is blocked and its TCP was not measured"
		case t.Reached == No:
			p.Outcome, p.Reason = Fail, "a side's UDP is blocked and it reaches no server over TCP"
		case p.Outcome == Success:
			p.Reason = "a side's UDP is blocked: it reaches the relay over TCP or TLS"
		}
	}
	return p
}
