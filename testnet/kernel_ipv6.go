//go:build linux

package testnet

// IPv6 in the kernel lab: beside the IPv4 plan, the server link, every
// dual-stack site's WAN link and its LAN get IPv6 addresses from
// 2001:db8::/32 (the internet) and fd00::/8 (LANs behind a translating
// router), and the site router runs an ip6 nftables table of its own
// (the IPv4 program of kernel_nft.go never sees IPv6):
//
//	srv 2001:db8:10::10, ::11 ── inet ── 2001:db8:100:i::2 router ── host
//	                                      LAN 2001:db8:200:i::/64 (no NAT)
//	                                       or fd00:0:0:i::/64 (NAT66, NPTv6)
//
// On the shared segment (kernel_segment.go) the bridge carries IPv6 too:
// the server and every router's WAN (2001:db8:10::100+i) are on one /64,
// 2001:db8:10::/64, and each member routes the others' global LAN
// prefixes to their routers with static routes, as routers sharing a
// building LAN are configured by hand: no router between any two.

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/natlab/natlab/natclass"
)

const nftTable6 = "natlab6"

// checkKernelIPv6 rejects IPv6 where this backend does not build it,
// before any namespace exists.
func checkKernelIPv6(t Topology) error {
	for _, s := range t.Sites {
		if s.IPv6 == nil {
			continue
		}
		switch {
		case s.NAT.Inner != nil || s.NAT.Carrier:
			return fmt.Errorf("site %q: IPv6 behind a carrier-grade or double NAT: %w", s.Name, ErrNotSupported)
		case s.NAT.Mapping == "":
			return fmt.Errorf("site %q: IPv6 on a site whose IPv4 side has no NAT: %w", s.Name, ErrNotSupported)
		}
		switch n := s.IPv6; {
		case (n.UDPPinholes || n.BlockUDP) && !n.Firewall:
			return fmt.Errorf("site %q: IPv6 UDP pinholes or UDP blocking without a stateful firewall", s.Name)
		case n.UDPPinholes && n.BlockUDP:
			return fmt.Errorf("site %q: IPv6 UDP pinholes on a firewall that blocks UDP", s.Name)
		case n.RandomPorts && n.Translation != natclass.TranslationNAT66:
			return fmt.Errorf("site %q: random ports are masquerade's (NAT66), not %s's", s.Name, n.Translation)
		}
		switch s.IPv6.Translation {
		case natclass.TranslationNone, natclass.TranslationNAT66, natclass.TranslationNPTv6:
		case natclass.TranslationNAT64:
			if err := checkNAT64Tools(); err != nil {
				return fmt.Errorf("site %q: %w", s.Name, err)
			}
		default:
			return fmt.Errorf("site %q: IPv6 translation %q: want none, nat66, nptv6 or nat64", s.Name, s.IPv6.Translation)
		}
	}
	return nil
}

// addr6 puts an IPv6 address on ifc without duplicate address detection,
// which would leave it tentative (unusable) for a second or more.
func (b *kernelBuilder) addr6(ns, ifc string, p netip.Prefix) error {
	h := b.handles[ns]
	l, err := h.LinkByName(ifc)
	if err != nil {
		return fmt.Errorf("find %s in %s: %w", ifc, ns, err)
	}
	if err := h.AddrAdd(l, &netlink.Addr{IPNet: toIPNet(p), Flags: unix.IFA_F_NODAD}); err != nil {
		return fmt.Errorf("address %s on %s in %s: %w", p, ifc, ns, err)
	}
	return nil
}

// neigh6 makes the IPv6 neighbours on one link static: each end learns
// the other's addresses with its MAC address. Otherwise the lab's first
// packets race neighbour discovery on links just brought up, and a lost
// solicitation costs RFC 4861's one-second retransmission, which a
// STUN check reads as a slow server.
func (b *kernelBuilder) neigh6(nsA, ifA string, addrsA []netip.Addr, nsB, ifB string, addrsB []netip.Addr) error {
	la, err := b.handles[nsA].LinkByName(ifA)
	if err != nil {
		return fmt.Errorf("find %s in %s: %w", ifA, nsA, err)
	}
	lb, err := b.handles[nsB].LinkByName(ifB)
	if err != nil {
		return fmt.Errorf("find %s in %s: %w", ifB, nsB, err)
	}
	for _, e := range []struct {
		ns    string
		local netlink.Link
		mac   net.HardwareAddr
		addrs []netip.Addr
	}{{nsA, la, lb.Attrs().HardwareAddr, addrsB}, {nsB, lb, la.Attrs().HardwareAddr, addrsA}} {
		if len(e.mac) == 0 {
			continue // a TUN delay line has no link layer
		}
		for _, a := range e.addrs {
			n := &netlink.Neigh{LinkIndex: e.local.Attrs().Index, Family: netlink.FAMILY_V6, State: netlink.NUD_PERMANENT,
				IP: a.AsSlice(), HardwareAddr: e.mac}
			if err := b.handles[e.ns].NeighSet(n); err != nil {
				return fmt.Errorf("neighbour %s on %s in %s: %w", a, e.local.Attrs().Name, e.ns, err)
			}
		}
	}
	return nil
}

// forward6 turns a namespace into an IPv6 router.
func forward6(ns string) error {
	return setSysctls(ns, map[string]string{"net/ipv6/conf/all/forwarding": "1"})
}

// seg6Port is a member of the shared segment over IPv6: its interface
// on the bridge, its addresses there, and the global prefix it routes
// (invalid for the server and a NAT66 router, whose LAN is not routed).
type seg6Port struct {
	ns, ifc string
	addrs   []netip.Addr
	routed  netip.Prefix
}

// join6 plugs a member into the shared segment's IPv6: with every member
// before it, static neighbour entries both ways (no neighbour discovery
// to race, as on the routed links) and routes to each other's prefixes.
func (b *kernelBuilder) join6(p seg6Port) error {
	for _, m := range b.seg6 {
		if err := b.neigh6(m.ns, m.ifc, m.addrs, p.ns, p.ifc, p.addrs); err != nil {
			return err
		}
		if p.routed.IsValid() {
			if err := b.route(m.ns, m.ifc, p.routed, p.addrs[0]); err != nil {
				return err
			}
		}
		if m.routed.IsValid() {
			if err := b.route(p.ns, p.ifc, m.routed, m.addrs[0]); err != nil {
				return err
			}
		}
	}
	b.seg6 = append(b.seg6, p)
	return nil
}

// sharedServer6 puts the server's IPv6 addresses on the shared segment.
func (b *kernelBuilder) sharedServer6(inet, srv string) error {
	// As for IPv4: bridged frames must not meet ip6tables' hooks.
	if err := setSysctls(inet, map[string]string{"net/bridge/bridge-nf-call-ip6tables": "0"}); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for _, a := range ServerAddrs6 {
		if err := b.addr6(srv, "eth0", netip.PrefixFrom(a, 64)); err != nil {
			return err
		}
	}
	return b.join6(seg6Port{ns: srv, ifc: "eth0", addrs: ServerAddrs6[:]})
}

// server6 gives the server link its IPv6 addresses.
func (b *kernelBuilder) server6(inet, srv string) error {
	if b.shared {
		return b.sharedServer6(inet, srv)
	}
	if err := forward6(inet); err != nil {
		return err
	}
	steps := []func() error{
		func() error { return b.addr6(inet, "srv", netip.PrefixFrom(inetServerGW6, 64)) },
		func() error { return b.addr6(srv, "eth0", netip.PrefixFrom(ServerAddrs6[0], 64)) },
		func() error { return b.addr6(srv, "eth0", netip.PrefixFrom(ServerAddrs6[1], 64)) },
		func() error { return b.route(srv, "eth0", netip.Prefix{}, inetServerGW6) },
		func() error {
			return b.neigh6(inet, "srv", []netip.Addr{inetServerGW6}, srv, "eth0", ServerAddrs6[:])
		},
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return err
		}
	}
	return nil
}

// site6 gives site i's WAN link, LAN and host IPv6, and its router the
// ip6 program; it returns the host's address and the one the internet
// sees.
func (b *kernelBuilder) site6(i int, s SiteSpec, inet, inetIf, outer, hostNS string) (host, public netip.Addr, err error) {
	_, wan := siteWAN6(i)
	if b.shared {
		wan = sharedWAN6(i)
	}
	lan := siteGlobal6(i)
	if s.IPv6.Translation == natclass.TranslationNAT66 || s.IPv6.Translation == natclass.TranslationNPTv6 {
		lan = siteULA6(i)
	}
	host, public = in6(lan, iidHost), in6(lan, iidHost)
	// The site's global prefix is routed to its router (with NPTv6 the
	// router maps it onto the LAN); a NAT66 LAN is not routed.
	routed := siteGlobal6(i)
	switch s.IPv6.Translation {
	case natclass.TranslationNAT66:
		public, routed = wan, netip.Prefix{}
	case natclass.TranslationNPTv6:
		public = in6(siteGlobal6(i), iidHost)
	}
	if err := forward6(outer); err != nil {
		return host, public, err
	}
	steps := []func() error{
		func() error { return b.wan6(i, inet, inetIf, outer, wan, routed) },
		func() error { return b.addr6(outer, "lan", netip.PrefixFrom(in6(lan, iidRouter), 64)) },
		func() error {
			if s.IPv6.Translation != natclass.TranslationNPTv6 {
				return nil
			}
			// The global prefix NPTv6 maps the LAN onto lies behind the
			// LAN side, as with a stateless RFC 6296 translator: what
			// comes in for it unsolicited meets the forward filter (and a
			// hop limit that runs out there, Time Exceeded), instead of
			// being sent back out of the WAN, where on the shared segment
			// the router would redirect the sender to a neighbour that
			// does not exist (measured: the server then lost the host).
			return b.route(outer, "lan", siteGlobal6(i), netip.Addr{})
		},
		func() error { return b.addr6(hostNS, "eth0", netip.PrefixFrom(host, 64)) },
		func() error { return b.route(hostNS, "eth0", netip.Prefix{}, in6(lan, iidRouter)) },
		func() error {
			return b.neigh6(outer, "lan", []netip.Addr{in6(lan, iidRouter)}, hostNS, "eth0", []netip.Addr{host})
		},
	}
	for _, st := range steps {
		if err := st(); err != nil {
			return host, public, err
		}
	}
	c, err := nftConn(outer)
	if err != nil {
		return host, public, err
	}
	defer c.CloseLasting()
	if err := router6Rules(c, *s.IPv6, i); err != nil {
		return host, public, withPrivErr(fmt.Errorf("router %s: ip6: %w", outer, err))
	}
	return host, public, nil
}

// wan6 gives site i's router its IPv6 WAN address wan: on a routed link
// to the internet router (its default route, and routed sent its way),
// or on the shared segment beside the server and the other routers.
func (b *kernelBuilder) wan6(i int, inet, inetIf, outer string, wan netip.Addr, routed netip.Prefix) error {
	if err := b.addr6(outer, "wan", netip.PrefixFrom(wan, 64)); err != nil {
		return err
	}
	if b.shared {
		return b.join6(seg6Port{ns: outer, ifc: "wan", addrs: []netip.Addr{wan}, routed: routed})
	}
	gw, _ := siteWAN6(i)
	steps := []func() error{
		func() error { return b.addr6(inet, inetIf, netip.PrefixFrom(gw, 64)) },
		func() error { return b.route(outer, "wan", netip.Prefix{}, gw) },
		func() error { return b.neigh6(inet, inetIf, []netip.Addr{gw}, outer, "wan", []netip.Addr{wan}) },
	}
	if routed.IsValid() {
		steps = append(steps, func() error { return b.route(inet, inetIf, routed, wan) })
	}
	for _, st := range steps {
		if err := st(); err != nil {
			return err
		}
	}
	return nil
}

// router6Rules is a site router's IPv6 program: the stateful firewall
// (forward: replies and what the LAN sends; ICMPv6 errors ride on
// RELATED) and the translation in postrouting.
func router6Rules(c *nftables.Conn, n NAT6, i int) error {
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv6, Name: nftTable6})
	rule := func(ch *nftables.Chain, e ...expr.Any) {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: e})
	}
	if n.Firewall {
		if err := firewall6(c, t, n); err != nil {
			return err
		}
	}
	if n.Translation == natclass.TranslationNone {
		return flush(c)
	}
	if n.Translation == natclass.TranslationNAT66 {
		router6Output(c, t)
	}
	post := c.AddChain(&nftables.Chain{Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})
	out := nftIf(expr.MetaKeyOIFNAME, "wan")
	if n.Translation == natclass.TranslationNAT66 {
		// random,fully-random: a random port for every new flow, where
		// plain masquerade keeps the source port while it is free.
		rule(post, nftJoin(out, []expr.Any{&expr.Masq{Random: n.RandomPorts, FullyRandom: n.RandomPorts}})...)
		return flush(c)
	}
	// NPTv6: `snat ip6 prefix to <global /64>` — NF_NAT_RANGE_NETMAP
	// keeps the host bits and, without a port range, the port.
	g := siteGlobal6(i)
	last := g.Addr().As16()
	for k := 8; k < 16; k++ {
		last[k] = 0xff
	}
	first := g.Addr().As16()
	rule(post, nftJoin(out, []expr.Any{
		&expr.Immediate{Register: regV1, Data: first[:]},
		&expr.Immediate{Register: regV2, Data: last[:]},
		&expr.NAT{Type: expr.NATTypeSourceNAT, Family: unix.NFPROTO_IPV6, RegAddrMin: regV1, RegAddrMax: regV2, Prefix: true},
	})...)
	return flush(c)
}

// firewall6 is the stateful filter of a site router's forward chain:
// replies and what the LAN sends pass, nothing else comes in. With UDP
// pinholes (RFC 6092 REC-17's endpoint-independent filtering for UDP),
// each UDP packet the LAN sends out adds or refreshes its (source
// address, source port) in a dynamic set, and UDP from anywhere to a
// pinhole is admitted, as nft guides write a cone from a set updated on
// the packet path; TCP keeps the reply-only rule.
func firewall6(c *nftables.Conn, t *nftables.Table, n NAT6) error {
	drop := nftables.ChainPolicyDrop
	fwd := c.AddChain(&nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &drop})
	rule := func(e ...expr.Any) { c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: e}) }
	if n.BlockUDP {
		rule(append(nftL4(unix.IPPROTO_UDP), nftVerdict(expr.VerdictDrop))...)
	}
	var pinholes *nftables.Set
	if n.UDPPinholes {
		pinholes = &nftables.Set{Table: t, ID: setIDPinholes6, Name: "udp_pinholes", Dynamic: true, HasTimeout: true, Timeout: pinholeLifetime6,
			Concatenation: true, KeyType: nftables.MustConcatSetType(nftables.TypeIP6Addr, nftables.TypeInetService)}
		if err := c.AddSet(pinholes, nil); err != nil {
			return fmt.Errorf("add UDP pinhole set: %w", err)
		}
		// Before the established rule: every outbound packet refreshes
		// its pinhole (REC-16), not only a flow's first.
		rule(nftJoin(nftIf(expr.MetaKeyIIFNAME, "lan"), nftL4(unix.IPPROTO_UDP), []expr.Any{
			&expr.Payload{DestRegister: nftReg32(0), Base: expr.PayloadBaseNetworkHeader, Offset: ip6SaddrOffset, Len: 16},
			nftThSport(nftReg32(4)),
			&expr.Dynset{SrcRegKey: nftReg32(0), SetName: pinholes.Name, SetID: pinholes.ID, Operation: unix.NFT_DYNSET_OP_UPDATE, Timeout: pinholeLifetime6},
		})...)
	}
	rule(append(nftCtState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), nftVerdict(expr.VerdictAccept))...)
	rule(append(nftIf(expr.MetaKeyIIFNAME, "lan"), nftVerdict(expr.VerdictAccept))...)
	if pinholes != nil {
		rule(nftJoin(nftIf(expr.MetaKeyIIFNAME, "wan"), nftL4(unix.IPPROTO_UDP), []expr.Any{
			&expr.Payload{DestRegister: nftReg32(0), Base: expr.PayloadBaseNetworkHeader, Offset: ip6DaddrOffset, Len: 16},
			nftThDport(nftReg32(4)),
			&expr.Lookup{SourceRegister: nftReg32(0), SetName: pinholes.Name, SetID: pinholes.ID},
			nftVerdict(expr.VerdictAccept),
		})...)
	}
	return nil
}

// IPv6 header offsets of the addresses.
const (
	ip6SaddrOffset = 8
	ip6DaddrOffset = 24
)

// pinholeLifetime6 is how long an idle UDP pinhole stays open: RFC 6092
// REC-14's two minutes.
const pinholeLifetime6 = 2 * time.Minute

// router6Output makes a masquerading router's own answers to the WAN
// vanish, as the IPv4 routers' do (routerInput): unsolicited UDP and TCP
// to its address reach its stack, so conntrack records them (the
// conntrack trap stays real), but its TCP RST and ICMPv6 destination
// unreachable never leave to the WAN, like at real CPE whose WAN input
// drops. Without it a peer's TCP simultaneous open toward the router's
// address is refused at once, and its entry closed, until the host's
// own SYN has left.
func router6Output(c *nftables.Conn, t *nftables.Table) {
	accept := nftables.ChainPolicyAccept
	out := c.AddChain(&nftables.Chain{Name: "output", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	drop := nftVerdict(expr.VerdictDrop)
	c.AddRule(&nftables.Rule{Table: t, Chain: out, Exprs: nftJoin(nftIf(expr.MetaKeyOIFNAME, "wan"), nftL4(unix.IPPROTO_ICMPV6),
		[]expr.Any{&expr.Payload{DestRegister: regV1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: regV1, Data: []byte{icmp6DestUnreachable}}, drop})})
	c.AddRule(&nftables.Rule{Table: t, Chain: out, Exprs: nftJoin(nftIf(expr.MetaKeyOIFNAME, "wan"), nftL4(unix.IPPROTO_TCP),
		[]expr.Any{&expr.Payload{DestRegister: regV1, Base: expr.PayloadBaseTransportHeader, Offset: tcpFlagsOffset, Len: 1},
			&expr.Bitwise{SourceRegister: regV1, DestRegister: regV1, Len: 1, Mask: []byte{tcpFlagRST}, Xor: []byte{0}},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: regV1, Data: []byte{0}}, drop})})
}

// icmp6DestUnreachable is ICMPv6's "destination unreachable" type (port
// unreachable is one of its codes).
const icmp6DestUnreachable = 1

func flush(c *nftables.Conn) error {
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	return nil
}
