package testnet

import (
	"fmt"
	"net/netip"
	"sort"

	"github.com/natlab/natlab/natclass"
)

// NAT6 is what a site's router does to IPv6. Home routers give IPv6 no
// NAT at all but a stateful firewall (RFC 6092); some translate anyway:
// NAT66 masquerade (the address replaced by the router's), or NPTv6
// (RFC 6296: the unique-local LAN prefix rewritten to a global one, the
// interface identifier and port kept). Kernel backend only.
type NAT6 struct {
	// Translation is natclass.TranslationNone, TranslationNAT66 or
	// TranslationNPTv6.
	Translation string `json:"translation"`
	// Firewall admits only replies from the WAN (conntrack established):
	// address-and-port-dependent filtering. Without it anything may come
	// in (endpoint-independent filtering).
	Firewall bool `json:"firewall"`
	// UDPPinholes opens the firewall to UDP from anywhere toward a
	// (host, port) the LAN has sent UDP from (a dynamic set, refreshed
	// by outbound packets): endpoint-independent filtering for UDP, as
	// RFC 6092 REC-17 recommends by default, with TCP still admitted
	// only as replies (REC-17: UDP's filtering "MAY be independent of the
	// filtering behavior for TCP"). Needs Firewall.
	UDPPinholes bool `json:"udp_pinholes,omitempty"`
	// RandomPorts makes a NAT66 masquerade choose a random port for
	// every new flow (nft masquerade random,fully-random; iptables
	// MASQUERADE --random-fully): the mapping then depends on the
	// destination. Needs TranslationNAT66.
	RandomPorts bool `json:"random_ports,omitempty"`
	// BlockUDP makes the firewall drop all UDP over IPv6 (an enterprise
	// firewall passing TCP only: the ipv6-tcp-only preset). Needs
	// Firewall.
	BlockUDP bool `json:"block_udp,omitempty"`
}

// presets6 are the IPv6 behaviours of `natlab lab --ipv6`. Each site's
// IPv4 side is presetIPv4Side, a dual-stack home router's usual NAT.
var presets6 = map[string]NAT6{
	// OpenWrt firewall4 / RFC 6092 defaults: no translation, inbound
	// only for established flows.
	"ipv6-firewall": {Translation: natclass.TranslationNone, Firewall: true},
	// A router forwarding IPv6 with no filter at all.
	"ipv6-open": {Translation: natclass.TranslationNone},
	// nft `masquerade` for IPv6, as guides for hotel and VPN gateways
	// with a single global address configure it.
	"nat66": {Translation: natclass.TranslationNAT66, Firewall: true},
	// nft `snat ip6 prefix to` (Linux's prefix NAT, like OpenWrt's NPTv6
	// setups): the ULA prefix mapped onto the global one, behind the
	// stateful firewall.
	"nptv6": {Translation: natclass.TranslationNPTv6, Firewall: true},
	// NAT66 masquerade with a random port per flow: how container
	// networks masquerade a dual-stack cluster's IPv6 pod egress
	// (kube-router's and flannel's ip6tables `MASQUERADE --random-fully`),
	// behind conntrack's stateful filter.
	"nat66-random": {Translation: natclass.TranslationNAT66, Firewall: true, RandomPorts: true},
	// RFC 6092 REC-17's default for unmanaged CPE: endpoint-independent
	// filtering for UDP (pinholes per internal address and port), TCP
	// admitted only as replies, no translation.
	"ipv6-firewall-udp-eif": {Translation: natclass.TranslationNone, Firewall: true, UDPPinholes: true},
	// The corporate firewall of WebRTC deployment guides (Genesys'
	// "Firewalls and Restrictive NAT", "a typical corporate firewall
	// configuration is to block out all the UDP traffic"): forwarded UDP
	// dropped, outbound TCP passed, inbound only replies; no translation.
	// Peers meet over TCP, or over TURN on TCP.
	"ipv6-tcp-only": {Translation: natclass.TranslationNone, Firewall: true, BlockUDP: true},
	// An IPv6-only site: tayga (NAT64) and unbound (DNS64) on the
	// router, the site's IPv4 preset on the NAT64's IPv4 side.
	"nat64": {Translation: natclass.TranslationNAT64, Firewall: true},
}

// presetIPv4Side is the IPv4 NAT of every IPv6 preset's site.
const presetIPv4Side = "port-restricted-cone"

// IPv6Presets returns the IPv6 preset names in a stable order.
func IPv6Presets() []string {
	names := make([]string, 0, len(presets6))
	for n := range presets6 {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Preset6 returns the named IPv6 behaviour.
func Preset6(name string) (NAT6, error) {
	n, ok := presets6[name]
	if !ok {
		return NAT6{}, fmt.Errorf("unknown IPv6 preset %q (known: %v)", name, IPv6Presets())
	}
	return n, nil
}

// Expected6 is what a correct IPv6 check must report behind a NAT6.
type Expected6 struct {
	Expected
	Translation string `json:"ipv6_translation"`
	// TCP is the TCP profile over IPv6 (mapping, filtering, ports).
	TCP Expected `json:"tcp"`
}

// Expect returns the IPv6 profile a host behind n should see, UDP and
// TCP, from what the router's rules do: a translating router keeps the
// port while it is free (conntrack), so it maps endpoint-independently
// unless it randomises ports per flow; a stateful firewall admits only
// replies (address-and-port-dependent) unless UDP pinholes admit anyone
// to a (host, port) that sent.
func (n NAT6) Expect() Expected6 {
	nat := n.Translation != natclass.TranslationNone
	proto := func(pinholes bool) Expected {
		e := Expected{Mapping: natclass.EndpointIndependent, Filtering: natclass.EndpointIndependent, Allocation: natclass.Preserving}
		if n.RandomPorts {
			e.Mapping, e.Allocation = natclass.AddressAndPortDependent, natclass.Random
		}
		if n.Firewall && !pinholes {
			e.Filtering = natclass.AddressAndPortDependent
		}
		e.NATType = natclass.ClassicName(nat, e.Mapping, e.Filtering)
		return e
	}
	if n.BlockUDP {
		return Expected6{Expected: Expected{NATType: natclass.UDPBlocked}, Translation: n.Translation, TCP: proto(false)}
	}
	return Expected6{Expected: proto(n.UDPPinholes), Translation: n.Translation, TCP: proto(false)}
}

// Expect6 is the IPv6 profile the site's host should see: its NAT6's,
// or, behind NAT64, the site's IPv4 NAT seen through the translator (no
// hairpin compared: it would turn at tayga's pool, not at the NAT).
func (s SiteSpec) Expect6() Expected6 {
	if s.IPv6.Translation != natclass.TranslationNAT64 {
		return s.IPv6.Expect()
	}
	e, tcp := s.NAT.Expect(), s.NAT.ExpectTCP()
	e.Hairpinning, tcp.Hairpinning = natclass.NotChecked, natclass.NotChecked
	return Expected6{Expected: e, Translation: natclass.TranslationNAT64, TCP: tcp}
}

// IPv6Topology is the lab of `natlab lab --ipv6`: one site per IPv6
// preset (named a, b, …), each dual stack with presetIPv4Side for IPv4.
func IPv6Topology(names ...string) (Topology, error) {
	if len(names) == 0 {
		names = IPv6Presets()
	}
	v4, err := Preset(presetIPv4Side)
	if err != nil {
		return Topology{}, err
	}
	var t Topology
	for i, name := range names {
		n6, err := Preset6(name)
		if err != nil {
			return Topology{}, err
		}
		t.Sites = append(t.Sites, SiteSpec{Name: string(rune('a' + i)), Preset: presetIPv4Side, NAT: v4, IPv6: &n6, IPv6Preset: name})
	}
	return t, nil
}

// ipv6 reports whether any site speaks IPv6 (the server then does too).
func (t Topology) ipv6() bool {
	for _, s := range t.Sites {
		if s.IPv6 != nil {
			return true
		}
	}
	return false
}

// IPv6 addressing of the kernel lab, from the documentation prefix
// 2001:db8::/32 (the internet side) and fd00::/8 (site LANs).
var (
	// ServerAddrs6 are the server's two IPv6 addresses.
	ServerAddrs6  = [2]netip.Addr{netip.MustParseAddr("2001:db8:10::10"), netip.MustParseAddr("2001:db8:10::11")}
	inetServerGW6 = netip.MustParseAddr("2001:db8:10::1")
)

// siteWAN6 is site i's WAN link: the internet router's end and the
// site router's.
func siteWAN6(i int) (gw, router netip.Addr) {
	p := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0x01, 0x00, 0, byte(i), 15: 1})
	b := p.As16()
	b[15] = 2
	return p, netip.AddrFrom16(b)
}

// sharedWAN6 is site i's router on the shared segment: in the server's
// /64, 2001:db8:10::100 + i.
func sharedWAN6(i int) netip.Addr {
	return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0x00, 0x10, 14: 1, 15: byte(i)})
}

// siteGlobal6 is site i's global /64: its LAN without translation, the
// prefix NPTv6 maps the LAN onto.
func siteGlobal6(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0x02, 0x00, 0, byte(i)}), 64)
}

// siteULA6 is site i's unique-local LAN /64 behind a translating router.
func siteULA6(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0x00, 6: 0, 7: byte(i)}), 64)
}

// in6 is the address with interface identifier iid in the /64 p.
func in6(p netip.Prefix, iid [8]byte) netip.Addr {
	b := p.Addr().As16()
	copy(b[8:], iid[:])
	return netip.AddrFrom16(b)
}

// IIDs: the router is ::1 on its LAN; the host has a SLAAC-style
// identifier, so a masquerading router's address (::2 on the WAN) never
// shares the host's.
var (
	iidRouter = [8]byte{7: 1}
	iidHost   = [8]byte{0x50, 0x54, 0x00, 0xff, 0xfe, 0x00, 0x00, 0x02}
)

// Router says in words what a router with this IPv6 behaviour does, and
// with which tool, for listings (`natlab lab presets`).
func (n NAT6) Router() string {
	var s string
	switch n.Translation {
	case natclass.TranslationNone:
		s = "no translation: the LAN has a global /64"
	case natclass.TranslationNAT66:
		s = "NAT66 masquerade (nft masquerade): the unique-local LAN leaves with the router's WAN address"
		if n.RandomPorts {
			s = "NAT66 masquerade random,fully-random (iptables MASQUERADE --random-fully): the unique-local LAN leaves with the router's WAN address and a random port per flow"
		}
	case natclass.TranslationNPTv6:
		s = "prefix translation (nft snat ip6 prefix to): the unique-local LAN /64 onto a global one, interface ID and port kept"
	case natclass.TranslationNAT64:
		s = "IPv6-only LAN; NAT64 (tayga) and DNS64 (unbound) on the router, the NAT64's IPv4 side behind the site's IPv4 NAT"
	default:
		s = "translation " + n.Translation
	}
	switch {
	case n.Firewall && n.BlockUDP:
		return s + "; stateful firewall passing TCP only: all forwarded UDP dropped, TCP inbound only replies"
	case n.Firewall && n.UDPPinholes:
		return s + "; stateful firewall: UDP pinholes (anyone may send to a host address and port that sent UDP out), TCP inbound only replies"
	case n.Firewall:
		return s + "; stateful firewall: inbound only replies (conntrack established/related)"
	}
	return s + "; no filter: anything inbound is forwarded"
}

// Preset6Info is an IPv6 preset as `natlab lab presets` lists it.
type Preset6Info struct {
	Name string `json:"name"`
	// Router is what the site's router does to IPv6, in words.
	Router string `json:"router"`
	IPv6   NAT6   `json:"ipv6"`
	// IPv4Preset is the IPv4 preset of the preset's dual-stack site.
	IPv4Preset string `json:"ipv4_preset"`
	// Expected is the IPv6 profile the site's host should measure.
	Expected Expected6 `json:"expected"`
}

// IPv6PresetInfos lists the IPv6 presets in IPv6Presets' order, each
// with the profile its site should produce (through NAT64: the site's
// IPv4 preset seen through the translator).
func IPv6PresetInfos() ([]Preset6Info, error) {
	var out []Preset6Info
	for _, name := range IPv6Presets() {
		t, err := IPv6Topology(name)
		if err != nil {
			return nil, err
		}
		s := t.Sites[0]
		out = append(out, Preset6Info{Name: name, Router: s.IPv6.Router(), IPv6: *s.IPv6, IPv4Preset: s.Preset, Expected: s.Expect6()})
	}
	return out, nil
}
