// Package testnet builds lab networks: a server on an emulated internet and
// sites of (NAT router + host), each NAT with a profile. Two backends share
// one API: in-process (no privileges, UDP only) and kernel (network
// namespaces + nftables, UDP and TCP).
package testnet

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/natlab/natlab/natclass"
)

// NAT describes the behaviour of one NAT router. The zero value of Mapping
// means "no translation" (the host has a public address); Filtering then
// describes a plain stateful firewall, if any.
type NAT struct {
	// Mapping is the RFC 4787 mapping behaviour; empty for no NAT.
	Mapping natclass.Behavior `json:"mapping,omitempty"`
	// Filtering is the RFC 4787 filtering behaviour; empty for no filter.
	Filtering natclass.Behavior `json:"filtering,omitempty"`
	// Allocation is how external ports are chosen for new mappings.
	Allocation natclass.Allocation `json:"port_allocation,omitempty"`
	// Step is the port increment of a sequential allocator (default 1).
	Step int `json:"step,omitempty"`
	// Hairpinning lets a host reach another mapping of its own NAT through
	// the NAT's public address.
	Hairpinning bool `json:"hairpinning"`
	// MappingLifetime is how long an idle UDP mapping survives (default
	// DefaultMappingLifetime).
	MappingLifetime time.Duration `json:"mapping_lifetime,omitempty"`
	// EstablishedLifetime is how long an idle UDP mapping survives once it
	// has carried traffic both ways for more than two seconds (Linux:
	// nf_conntrack_udp_timeout_stream); default four times the mapping
	// lifetime, Linux's 30 s : 120 s.
	EstablishedLifetime time.Duration `json:"established_lifetime,omitempty"`
	// Carrier puts the host directly on this NAT's inside network, the
	// shared address space 100.64.0.0/10: a handset behind its mobile
	// operator's CGNAT, with no NAT of its own.
	Carrier bool `json:"carrier,omitempty"`
	// BlockUDP drops all UDP crossing the router (TCP still passes).
	BlockUDP bool `json:"block_udp,omitempty"`
	// Inner, if set, is a second NAT between the host and this one: this
	// NAT is then a carrier-grade NAT whose inside is 100.64.0.0/10.
	Inner *NAT `json:"inner,omitempty"`
	// PortMapping runs a UPnP-IGD / NAT-PMP / PCP server (miniupnpd) on
	// this router's LAN side. Kernel backend only, and only on the NAT the
	// host's LAN hangs off (the inner one of a double NAT); the
	// in-process backend ignores it.
	PortMapping bool `json:"port_mapping,omitempty"`
	// TCP, if set, is how the router treats TCP where it differs from
	// UDP: routers get full- or restricted-cone behaviour from rules
	// written for UDP only, and TCP gets whatever plain masquerade gives.
	// Only Mapping, Filtering and Allocation count. Kernel backend only
	// (the in-process lab has no TCP); nil: TCP as UDP.
	TCP *NAT `json:"tcp,omitempty"`
}

// PortMappingSuffix, appended to a preset name ("symmetric+upnp"), turns on
// NAT.PortMapping for the router in front of the host.
const PortMappingSuffix = "+upnp"

// DefaultMappingLifetime is the idle timeout of a UDP mapping when a preset
// does not say otherwise: 30 s, Linux conntrack's default for unreplied UDP
// and within RFC 4787's "at least 2 minutes" only for established flows,
// which is what home routers really do.
const DefaultMappingLifetime = 30 * time.Second

// establishedAfter is how long a mapping must carry traffic both ways
// before it counts as established (Linux: a UDP stream after two seconds).
const establishedAfter = 2 * time.Second

// CarrierLifetime is the idle UDP timeout of the carrier preset: mobile
// operators' CGNATs keep idle UDP mappings far shorter than home routers.
const CarrierLifetime = 20 * time.Second

// lifetime is the idle timeout of a NAT's mappings.
func (n NAT) lifetime() time.Duration {
	if n.MappingLifetime > 0 {
		return n.MappingLifetime
	}
	return DefaultMappingLifetime
}

// establishedLifetime is the idle timeout of a mapping that has carried
// traffic both ways.
func (n NAT) establishedLifetime() time.Duration {
	if n.EstablishedLifetime > 0 {
		return n.EstablishedLifetime
	}
	return 4 * n.lifetime()
}

// presets are the named NAT profiles of the lab. The names are a public
// interface (CLI flags, JSON, README).
var presets = map[string]NAT{
	"open": {
		Allocation: natclass.Preserving,
	},
	"full-cone": {
		Mapping: natclass.EndpointIndependent, Filtering: natclass.EndpointIndependent,
		Allocation: natclass.Preserving, Hairpinning: true,
	},
	"restricted-cone": {
		Mapping: natclass.EndpointIndependent, Filtering: natclass.AddressDependent,
		Allocation: natclass.Preserving, Hairpinning: true,
	},
	"port-restricted-cone": {
		Mapping: natclass.EndpointIndependent, Filtering: natclass.AddressAndPortDependent,
		Allocation: natclass.Preserving,
	},
	"symmetric": {
		Mapping: natclass.AddressAndPortDependent, Filtering: natclass.AddressAndPortDependent,
		Allocation: natclass.Random,
	},
	"symmetric-sequential": {
		Mapping: natclass.AddressAndPortDependent, Filtering: natclass.AddressAndPortDependent,
		Allocation: natclass.Sequential, Step: 1,
	},
	"udp-blocked": {
		Mapping: natclass.EndpointIndependent, Filtering: natclass.AddressAndPortDependent,
		Allocation: natclass.Preserving, BlockUDP: true,
	},
	// OpenWrt/ImmortalWrt "fullcone" (the FULLCONENAT target of
	// netfilter-full-cone-nat): full cone for UDP only; "for other
	// protocols FULLCONENAT is equivalent to MASQUERADE".
	"fullcone-udp": {
		Mapping: natclass.EndpointIndependent, Filtering: natclass.EndpointIndependent,
		Allocation: natclass.Preserving,
		TCP:        masqueradeTCP(),
	},
	// The nftables guides' restricted cone: a set of the addresses the
	// host has sent to (dynamic, with timeout) plus DNAT, written for UDP;
	// TCP is plain masquerade. A peer packet that arrives before the
	// host's own packet left is not admitted, and its conntrack entry
	// decides the flow until it expires (issue 10, cause 3).
	"restricted-cone-udp": {
		Mapping: natclass.EndpointIndependent, Filtering: natclass.AddressDependent,
		Allocation: natclass.Preserving,
		TCP:        masqueradeTCP(),
	},
	// pfSense hybrid outbound NAT with a Static Port rule for UDP (the
	// guides' advice for games and VoIP): UDP keeps its port; every other
	// connection gets the default source-port randomisation.
	"static-port-udp": {
		Mapping: natclass.EndpointIndependent, Filtering: natclass.AddressAndPortDependent,
		Allocation: natclass.Preserving,
		TCP: &NAT{Mapping: natclass.AddressAndPortDependent, Filtering: natclass.AddressAndPortDependent,
			Allocation: natclass.Random},
	},
	"carrier": {
		Mapping: natclass.AddressAndPortDependent, Filtering: natclass.AddressAndPortDependent,
		Allocation: natclass.Random, MappingLifetime: CarrierLifetime, EstablishedLifetime: 2 * CarrierLifetime,
		Carrier: true,
	},
	"double-nat": {
		Mapping: natclass.EndpointIndependent, Filtering: natclass.AddressAndPortDependent,
		Allocation: natclass.Preserving,
		Inner: &NAT{
			Mapping: natclass.EndpointIndependent, Filtering: natclass.AddressAndPortDependent,
			Allocation: natclass.Preserving,
		},
	},
}

// masqueradeTCP is plain masquerade: Linux keeps the source port while it
// can (EIM) and conntrack admits only replies (APDF).
func masqueradeTCP() *NAT {
	return &NAT{Mapping: natclass.EndpointIndependent, Filtering: natclass.AddressAndPortDependent, Allocation: natclass.Preserving}
}

// Presets returns the preset names in a stable order.
func Presets() []string {
	names := make([]string, 0, len(presets))
	for n := range presets {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Preset returns the named NAT profile. A name ending in
// PortMappingSuffix is the preset with port mapping on the router in front
// of the host.
func Preset(name string) (NAT, error) {
	base, upnp := strings.CutSuffix(name, PortMappingSuffix)
	n, ok := presets[base]
	if !ok {
		return NAT{}, fmt.Errorf("unknown NAT preset %q (known: %v, each with an optional %q)", name, Presets(), PortMappingSuffix)
	}
	if n.Inner != nil {
		inner := *n.Inner
		n.Inner = &inner
	}
	if n.TCP != nil {
		tcp := *n.TCP
		n.TCP = &tcp
	}
	if upnp {
		if n.Inner != nil {
			n.Inner.PortMapping = true
		} else {
			n.PortMapping = true
		}
	}
	return n, nil
}

// Expected is what a correct classifier must report for a host behind a NAT.
type Expected struct {
	Mapping     natclass.Behavior   `json:"mapping,omitempty"`
	Filtering   natclass.Behavior   `json:"filtering,omitempty"`
	NATType     natclass.NATType    `json:"nat_type"`
	Allocation  natclass.Allocation `json:"port_allocation,omitempty"`
	Hairpinning natclass.Tri        `json:"hairpinning"`
}

// Expect returns the profile a host behind n should see. For nested NATs
// the most restrictive layer decides each behaviour.
func (n NAT) Expect() Expected {
	if n.BlockUDP {
		return Expected{NATType: natclass.UDPBlocked}
	}
	m, f, a, hp := n.Mapping, n.Filtering, n.Allocation, n.Hairpinning
	nat := m != ""
	if n.Inner != nil {
		in := n.Inner.Expect()
		m, f = stricter(m, in.Mapping), stricter(f, in.Filtering)
		if a == natclass.Preserving {
			a = in.Allocation
		}
		// A hairpinned packet must turn around at the inner NAT, which
		// only sees its own mappings: double NAT hairpins only if both do.
		hp = hp && in.Hairpinning == natclass.Yes
		nat = true
	}
	e := Expected{Mapping: m, Filtering: f, Allocation: a, Hairpinning: natclass.TriOf(hp)}
	if !nat {
		e.Mapping = natclass.EndpointIndependent
		if e.Filtering == "" {
			e.Filtering = natclass.EndpointIndependent
		}
		// Without NAT there is nothing to hairpin through.
		e.Hairpinning = natclass.NotChecked
	}
	e.NATType = natclass.ClassicName(nat, e.Mapping, e.Filtering)
	return e
}

// ExpectTCP returns the TCP profile a host behind n should see: the
// router's TCP behaviour where it has one of its own (NAT.TCP), else its
// UDP behaviour; a UDP-blocked site's TCP passes an EIM/APDF NAT.
func (n NAT) ExpectTCP() Expected {
	m := n
	if n.TCP != nil {
		m.Mapping, m.Filtering, m.Allocation, m.Hairpinning = n.TCP.Mapping, n.TCP.Filtering, n.TCP.Allocation, false
	}
	m.BlockUDP, m.TCP = false, nil
	if n.Inner != nil && n.Inner.TCP != nil {
		inner := *n.Inner
		inner.Mapping, inner.Filtering, inner.Allocation = n.Inner.TCP.Mapping, n.Inner.TCP.Filtering, n.Inner.TCP.Allocation
		m.Inner = &inner
	}
	return m.Expect()
}

var strictness = map[natclass.Behavior]int{
	"": 0, natclass.EndpointIndependent: 1, natclass.AddressDependent: 2, natclass.AddressAndPortDependent: 3,
}

func stricter(a, b natclass.Behavior) natclass.Behavior {
	if strictness[b] > strictness[a] {
		return b
	}
	return a
}

// Link shapes one link of the lab.
type Link struct {
	Delay time.Duration `json:"delay,omitempty"` // one-way
	Loss  float64       `json:"loss,omitempty"`  // probability 0..1 per packet
}

// SiteSpec is one (NAT router + host) pair.
type SiteSpec struct {
	Name string `json:"name"` // short, [a-z0-9]: "a", "b"
	// Preset is informational: the name NAT came from, if any.
	Preset string `json:"preset,omitempty"`
	NAT    NAT    `json:"nat"`
	// WAN shapes the router's link to the internet.
	WAN Link `json:"wan"`
	// IPv6, if set, makes the site dual stack: what its router does to
	// IPv6 (kernel backend, routed topology, single router only);
	// IPv6Preset names it.
	IPv6       *NAT6  `json:"ipv6,omitempty"`
	IPv6Preset string `json:"ipv6_preset,omitempty"`
}

// Segment says what joins the site routers and the server.
type Segment string

// The two ways of joining the routers; the strings are part of the CLI and
// JSON.
const (
	// Routed puts a router (the emulated internet) between the server and
	// every site, so two site routers are one router apart: an opening
	// packet with a low TTL expires between them.
	Routed Segment = "routed"
	// Shared puts the server and every site's router on one Ethernet
	// segment (a bridge): nothing lies between the routers, as with NATs
	// on one switch or one building LAN. A packet addressed to the peer's
	// router is delivered there whatever its TTL. Kernel backend only.
	Shared Segment = "shared"
)

// Segments lists the topologies, the default first.
func Segments() []Segment { return []Segment{Routed, Shared} }

// ParseSegment returns the named segment; "" is Routed.
func ParseSegment(s string) (Segment, error) {
	switch Segment(s) {
	case "", Routed:
		return Routed, nil
	case Shared:
		return Shared, nil
	}
	return "", fmt.Errorf("unknown topology %q (want %q or %q)", s, Routed, Shared)
}

// Topology is a whole lab: one server with two public addresses and sites.
type Topology struct {
	Sites []SiteSpec `json:"sites"`
	// ServerLink shapes the server's link to the internet.
	ServerLink Link `json:"server_link"`
	// Segment joins the routers and the server: Routed (the default, "")
	// or Shared.
	Segment Segment `json:"segment,omitempty"`
}

// shared reports whether the routers share one segment.
func (t Topology) shared() bool { return t.Segment == Shared }

// PairTopology is the usual lab: sites "a" and "b" behind the given presets.
func PairTopology(presetA, presetB string) (Topology, error) {
	var t Topology
	for _, s := range []struct{ name, preset string }{{"a", presetA}, {"b", presetB}} {
		if s.preset == "" {
			continue
		}
		n, err := Preset(s.preset)
		if err != nil {
			return Topology{}, err
		}
		t.Sites = append(t.Sites, SiteSpec{Name: s.name, Preset: s.preset, NAT: n})
	}
	return t, nil
}

// HasPortMapping reports whether any layer of n answers port-mapping
// requests (UPnP-IGD, NAT-PMP, PCP).
func (n NAT) HasPortMapping() bool {
	return n.PortMapping || (n.Inner != nil && n.Inner.PortMapping)
}
