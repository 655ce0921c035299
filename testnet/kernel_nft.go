//go:build linux

package testnet

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/natlab/natlab/natclass"
)

// nftables registers. The 32-bit registers let a concatenated key be built
// field by field; nftReg32(0) overlaps NFT_REG_1, so a rule uses one scheme.
const (
	regV1 = 1 // NFT_REG_1, a 16-byte register for single values
	regV2 = 2 // NFT_REG_2
)

// Conntrack constants the x/sys/unix package does not export.
const (
	ctDirOriginal = 0      // IP_CT_DIR_ORIGINAL
	ctStatusDNAT  = 1 << 5 // IPS_DST_NAT: the flow's destination was translated
)

// Header fields the router's output filter matches.
const (
	icmpDestUnreachable = 3    // ICMP type of "port unreachable" and kin
	tcpFlagsOffset      = 13   // byte of the TCP header holding the flags
	tcpFlagRST          = 0x04 // the RST flag
)

func nftReg32(i uint32) uint32 { return unix.NFT_REG32_00 + i }

// Sequential allocation cycles through this many external ports starting at
// seqPortBase: enough that a port predictor never sees the wrap in a test,
// few enough to load as one numgen→port map.
const (
	seqPortBase = 20000
	seqPorts    = 1000
	// seqBatch is how many map elements go in one netlink message, to stay
	// well under the socket buffer.
	seqBatch = 200
)

// Set IDs name sets within one batch. Set explicitly because
// google/nftables otherwise draws them from an unsynchronised global
// counter, a data race when labs start concurrently.
const (
	setIDMappings = iota + 1
	setIDAllowed
	setIDSeqPorts
	setIDEndpoints
	setIDPinholes6 // the IPv6 firewall's UDP pinholes (kernel_ipv6.go)
)

// lossScale is the resolution of the loss rule: `numgen random mod
// lossScale < N` drops N in lossScale packets.
const lossScale = 1000

// routerSpec is what the nftables program of one NAT router depends on.
type routerSpec struct {
	NAT    NAT
	WAN    string     // interface towards the internet (or the outer NAT)
	LAN    string     // interface towards the host
	Public netip.Addr // the WAN address, the one mappings are made on
}

const nftTable = "natlab"

// recordAfterNAT places the recording chain after source NAT in
// postrouting, where packets already carry their external port.
const recordAfterNAT = 100

func nftIfname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}

func nftIf(key expr.MetaKey, name string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: regV1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: regV1, Data: nftIfname(name)},
	}
}

func nftL4(proto byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: regV1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: regV1, Data: []byte{proto}},
	}
}

func nftDaddr(a netip.Addr) []expr.Any {
	b := a.As4()
	return []expr.Any{
		&expr.Payload{DestRegister: regV1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: regV1, Data: b[:]},
	}
}

// nftCtState matches any of the given conntrack states.
func nftCtState(mask uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: regV1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: regV1, DestRegister: regV1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(mask), Xor: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: regV1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}

func nftCtStatus(mask uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: regV1, Key: expr.CtKeySTATUS},
		&expr.Bitwise{SourceRegister: regV1, DestRegister: regV1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(mask), Xor: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: regV1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}

func nftVerdict(k expr.VerdictKind) expr.Any { return &expr.Verdict{Kind: k} }

func nftJoin(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// nftThDport loads the transport destination port (UDP and TCP alike).
func nftThDport(reg uint32) expr.Any {
	return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}
}

// nftThSport loads the transport source port.
func nftThSport(reg uint32) expr.Any {
	return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2}
}

func nftDaddrTo(reg uint32) expr.Any {
	return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4}
}

func nftSaddr(reg uint32) expr.Any {
	return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4}
}

func nftL4proto(reg uint32) expr.Any { return &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg} }

// checkKernelNAT rejects behaviours this backend cannot build, before any
// namespace exists.
func checkKernelNAT(n NAT, depth int) error {
	switch n.Allocation {
	case "", natclass.Preserving, natclass.Sequential, natclass.Random:
	default:
		return fmt.Errorf("port allocation %q: unknown", n.Allocation)
	}
	switch n.Mapping {
	case "", natclass.EndpointIndependent:
	case natclass.AddressDependent, natclass.AddressAndPortDependent:
		if n.Allocation == natclass.Preserving {
			// Linux keeps a free source port for every destination, so
			// preserving allocation always maps endpoint-independently.
			return fmt.Errorf("%s mapping with preserving allocation on the kernel backend: %w", n.Mapping, ErrNotSupported)
		}
	default:
		return fmt.Errorf("mapping %q: unknown", n.Mapping)
	}
	if n.Mapping != "" && n.MappingLifetime > 0 && n.MappingLifetime < time.Second {
		return fmt.Errorf("mapping lifetime %v: conntrack counts whole seconds, want >= 1s", n.MappingLifetime)
	}
	if n.Mapping != "" && n.EstablishedLifetime > 0 && n.EstablishedLifetime < time.Second {
		return fmt.Errorf("established lifetime %v: conntrack counts whole seconds, want >= 1s", n.EstablishedLifetime)
	}
	if n.Carrier && n.Inner != nil {
		return fmt.Errorf("a carrier NAT with a NAT behind it: the carrier's host has no NAT of its own")
	}
	if n.Allocation == natclass.Sequential && n.Step < 0 {
		return fmt.Errorf("sequential step %d: want >= 0", n.Step)
	}
	if err := checkTCP(n); err != nil {
		return err
	}
	if n.Inner != nil {
		if depth > 0 {
			return fmt.Errorf("more than two nested NATs on the kernel backend: %w", ErrNotSupported)
		}
		if n.Mapping == "" || n.Inner.Mapping == "" {
			return fmt.Errorf("nested NAT without translation on both layers on the kernel backend: %w", ErrNotSupported)
		}
		return checkKernelNAT(*n.Inner, depth+1)
	}
	return nil
}

// routerRules writes the router's nftables program: NAT mapping, filtering,
// hairpinning and UDP blocking, in one atomic batch.
func routerRules(c *nftables.Conn, r routerSpec) error {
	b := newRuleBuilder(c, r)
	if err := b.sets(); err != nil {
		return err
	}
	b.inbound()
	if err := b.outbound(); err != nil {
		return err
	}
	b.record()
	b.forward()
	b.routerInput()
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	return nil
}

// ruleBuilder holds what the parts of a router's program share: its
// behaviour, decided once, and the sets the rules read and write.
type ruleBuilder struct {
	c *nftables.Conn
	t *nftables.Table
	r routerSpec
	n NAT
	// nat: the router translates; filtering: its inbound filter (a NAT
	// without one is address-and-port-dependent, as conntrack admits
	// only replies).
	nat       bool
	filtering natclass.Behavior
	// useMappings: the mappings map (external proto . port → internal
	// addr . port) serves endpoint-independent filtering and
	// hairpinning; useAllowed: the allow-set of address-dependent
	// filtering; reuse: the endpoints map makes a non-preserving
	// allocator reuse a mapping.
	useMappings, useAllowed, reuse bool
	life                           time.Duration

	mappings, allowed, endpoints *nftables.Set
}

func newRuleBuilder(c *nftables.Conn, r routerSpec) *ruleBuilder {
	n := r.NAT
	b := &ruleBuilder{c: c, r: r, n: n, nat: n.Mapping != "", filtering: n.Filtering, life: n.lifetime()}
	if b.nat && b.filtering == "" {
		b.filtering = natclass.AddressAndPortDependent
	}
	b.useMappings = b.nat && (b.filtering == natclass.EndpointIndependent || b.filtering == natclass.AddressDependent || n.Hairpinning)
	b.useAllowed = b.filtering == natclass.AddressDependent
	b.reuse = b.nat && (n.Mapping == natclass.AddressDependent ||
		(n.Mapping == natclass.EndpointIndependent && n.Allocation != "" && n.Allocation != natclass.Preserving))
	b.t = c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: nftTable})
	return b
}

func (b *ruleBuilder) chain(name string, typ nftables.ChainType, hook *nftables.ChainHook, prio *nftables.ChainPriority, policy *nftables.ChainPolicy) *nftables.Chain {
	return b.c.AddChain(&nftables.Chain{Name: name, Table: b.t, Type: typ, Hooknum: hook, Priority: prio, Policy: policy})
}

func (b *ruleBuilder) rule(ch *nftables.Chain, e ...expr.Any) {
	b.c.AddRule(&nftables.Rule{Table: b.t, Chain: ch, Exprs: e})
}

// sets adds the dynamic sets the behaviour needs.
func (b *ruleBuilder) sets() error {
	t := b.t
	if b.useMappings {
		b.mappings = &nftables.Set{Table: t, ID: setIDMappings, Name: "mappings", IsMap: true, Dynamic: true, HasTimeout: true, Timeout: b.life,
			Concatenation: true,
			KeyType:       nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService),
			DataType:      nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)}
		if err := b.c.AddSet(b.mappings, nil); err != nil {
			return fmt.Errorf("add mappings map: %w", err)
		}
	}
	if b.useAllowed {
		b.allowed = &nftables.Set{Table: t, ID: setIDAllowed, Name: "allowed", Dynamic: true, HasTimeout: true, Timeout: b.life,
			Concatenation: true,
			KeyType:       nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService, nftables.TypeIPAddr)}
		if err := b.c.AddSet(b.allowed, nil); err != nil {
			return fmt.Errorf("add allowed set: %w", err)
		}
	}

	// The endpoints map (internal proto . addr . port [. remote addr] →
	// external port) makes a non-preserving allocator reuse a mapping, for
	// endpoint-independent and address-dependent mapping.
	if b.reuse {
		keys := []nftables.SetDatatype{nftables.TypeInetProto, nftables.TypeIPAddr, nftables.TypeInetService}
		if b.n.Mapping == natclass.AddressDependent {
			keys = append(keys, nftables.TypeIPAddr)
		}
		b.endpoints = &nftables.Set{Table: t, ID: setIDEndpoints, Name: "endpoints", IsMap: true, Dynamic: true, HasTimeout: true, Timeout: b.life,
			Concatenation: true, KeyType: nftables.MustConcatSetType(keys...), DataType: nftables.TypeInetService}
		if err := b.c.AddSet(b.endpoints, nil); err != nil {
			return fmt.Errorf("add endpoints map: %w", err)
		}
	}
	return nil
}

// inbound is the inbound translation, consulted only for the first
// packet of a flow.
func (b *ruleBuilder) inbound() {
	if !b.useMappings {
		return
	}
	pre := b.chain("prerouting", nftables.ChainTypeNAT, nftables.ChainHookPrerouting, nftables.ChainPriorityNATDest, nil)
	dnat := []expr.Any{
		nftL4proto(nftReg32(0)), nftThDport(nftReg32(1)),
		&expr.Lookup{SourceRegister: nftReg32(0), DestRegister: nftReg32(2), IsDestRegSet: true, SetName: b.mappings.Name, SetID: b.mappings.ID},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: nftReg32(2), RegProtoMin: nftReg32(3), Specified: true},
	}
	switch b.filtering {
	case natclass.EndpointIndependent:
		b.rule(pre, nftJoin(nftIf(expr.MetaKeyIIFNAME, b.r.WAN), nftDaddr(b.r.Public), dnat)...)
	case natclass.AddressDependent:
		b.rule(pre, nftJoin(nftIf(expr.MetaKeyIIFNAME, b.r.WAN), nftDaddr(b.r.Public),
			[]expr.Any{nftL4proto(nftReg32(0)), nftThDport(nftReg32(1)), nftSaddr(nftReg32(2)),
				&expr.Lookup{SourceRegister: nftReg32(0), SetName: b.allowed.Name, SetID: b.allowed.ID}},
			dnat)...)
	}
	if b.n.Hairpinning {
		b.rule(pre, nftJoin(nftIf(expr.MetaKeyIIFNAME, b.r.LAN), nftDaddr(b.r.Public), dnat)...)
	}
}

// outbound is the source translation.
func (b *ruleBuilder) outbound() error {
	if !b.nat {
		return nil
	}
	post := b.chain("postrouting", nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource, nil)
	pub := b.r.Public.As4()
	if b.n.Hairpinning {
		// A hairpinned packet leaves with the router's public address,
		// so the reply turns around here too.
		b.rule(post, nftJoin(nftIf(expr.MetaKeyIIFNAME, b.r.LAN), nftIf(expr.MetaKeyOIFNAME, b.r.LAN),
			nftCtStatus(ctStatusDNAT),
			[]expr.Any{&expr.Immediate{Register: regV1, Data: pub[:]},
				&expr.NAT{Type: expr.NATTypeSourceNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: regV1}})...)
	}
	out := nftIf(expr.MetaKeyOIFNAME, b.r.WAN)
	if tcp := b.n.TCP; tcp != nil {
		// A per-protocol rule before the general one, as the guides
		// write them: TCP gets plain masquerade of its own.
		b.rule(post, nftJoin(out, nftL4(unix.IPPROTO_TCP), []expr.Any{&expr.Masq{FullyRandom: tcp.Mapping != natclass.EndpointIndependent}})...)
	}
	if b.endpoints != nil {
		// An internal endpoint (or, address-dependent, endpoint and
		// remote address) seen before keeps its external port.
		key := []expr.Any{nftL4proto(nftReg32(0)), nftSaddr(nftReg32(1)), nftThSport(nftReg32(2))}
		if b.n.Mapping == natclass.AddressDependent {
			key = append(key, nftDaddrTo(nftReg32(3)))
		}
		b.rule(post, nftJoin(out, key, []expr.Any{
			&expr.Lookup{SourceRegister: nftReg32(0), DestRegister: nftReg32(4), IsDestRegSet: true, SetName: b.endpoints.Name, SetID: b.endpoints.ID},
			&expr.Immediate{Register: nftReg32(5), Data: pub[:]},
			&expr.NAT{Type: expr.NATTypeSourceNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: nftReg32(5),
				RegProtoMin: nftReg32(4), RegProtoMax: nftReg32(4), Specified: true},
		})...)
	}
	switch b.n.Allocation {
	case natclass.Preserving, "":
		if b.n.Mapping == natclass.EndpointIndependent {
			// Linux keeps the source port while the translated tuple
			// is unique, so one local port maps to one external port
			// for every destination.
			b.rule(post, nftJoin(out, []expr.Any{&expr.Masq{}})...)
			break
		}
		b.rule(post, nftJoin(out, []expr.Any{&expr.Masq{FullyRandom: true}})...)
	case natclass.Sequential:
		seq, err := seqPortMap(b.c, b.t, b.n.Step)
		if err != nil {
			return err
		}
		b.rule(post, nftJoin(out, []expr.Any{
			&expr.Immediate{Register: regV1, Data: pub[:]},
			&expr.Numgen{Register: regV2, Type: unix.NFT_NG_INCREMENTAL, Modulus: seqPorts},
			&expr.Lookup{SourceRegister: regV2, DestRegister: regV2, IsDestRegSet: true, SetName: seq.Name, SetID: seq.ID},
			&expr.NAT{Type: expr.NATTypeSourceNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: regV1,
				RegProtoMin: regV2, RegProtoMax: regV2, Specified: true},
		})...)
	default: // random
		b.rule(post, nftJoin(out, []expr.Any{&expr.Masq{FullyRandom: true}})...)
	}
	return nil
}

// record writes mappings and permissions into the sets after source NAT
// has rewritten the packet, so its source port is the external port. (Not
// `ct reply proto-dst`: google/nftables v0.3.0 encodes the u8 direction
// attribute as a u32, so the kernel always reads "original".)
func (b *ruleBuilder) record() {
	if b.useMappings || b.useAllowed || b.endpoints != nil {
		rec := b.chain("record", nftables.ChainTypeFilter, nftables.ChainHookPostrouting, nftables.ChainPriorityRef(*nftables.ChainPriorityNATSource+recordAfterNAT), nil)
		for _, proto := range recorded(b.n) {
			head := nftJoin(nftIf(expr.MetaKeyOIFNAME, b.r.WAN), nftL4(proto),
				[]expr.Any{&expr.Ct{Register: regV1, Key: expr.CtKeyDIRECTION},
					&expr.Cmp{Op: expr.CmpOpEq, Register: regV1, Data: []byte{ctDirOriginal}}})
			if b.mappings != nil {
				b.rule(rec, append(append([]expr.Any{}, head...),
					nftL4proto(nftReg32(0)),
					nftThSport(nftReg32(1)), // already translated: the external port
					&expr.Ct{Register: nftReg32(2), Key: expr.CtKeySRC, Direction: ctDirOriginal},
					&expr.Ct{Register: nftReg32(3), Key: expr.CtKeyPROTOSRC, Direction: ctDirOriginal},
					&expr.Dynset{SrcRegKey: nftReg32(0), SrcRegData: nftReg32(2), SetName: b.mappings.Name, SetID: b.mappings.ID,
						Operation: unix.NFT_DYNSET_OP_UPDATE, Timeout: b.life})...)
			}
			if b.endpoints != nil {
				key := []expr.Any{nftL4proto(nftReg32(0)),
					&expr.Ct{Register: nftReg32(1), Key: expr.CtKeySRC, Direction: ctDirOriginal},
					&expr.Ct{Register: nftReg32(2), Key: expr.CtKeyPROTOSRC, Direction: ctDirOriginal}}
				if b.n.Mapping == natclass.AddressDependent {
					key = append(key, nftDaddrTo(nftReg32(3)))
				}
				b.rule(rec, nftJoin(head, key, []expr.Any{
					nftThSport(nftReg32(4)),
					&expr.Dynset{SrcRegKey: nftReg32(0), SrcRegData: nftReg32(4), SetName: b.endpoints.Name, SetID: b.endpoints.ID,
						Operation: unix.NFT_DYNSET_OP_UPDATE, Timeout: b.life},
				})...)
			}
			if b.allowed != nil {
				b.rule(rec, append(append([]expr.Any{}, head...),
					nftL4proto(nftReg32(0)),
					nftThSport(nftReg32(1)), // already translated: the external port
					nftDaddrTo(nftReg32(2)),
					&expr.Dynset{SrcRegKey: nftReg32(0), SetName: b.allowed.Name, SetID: b.allowed.ID,
						Operation: unix.NFT_DYNSET_OP_UPDATE, Timeout: b.life})...)
			}
		}
	}
}

// forward is the filter proper.
func (b *ruleBuilder) forward() {
	accept, drop := expr.VerdictAccept, expr.VerdictDrop
	policyAccept, policyDrop := nftables.ChainPolicyAccept, nftables.ChainPolicyDrop
	fwdPolicy := &policyDrop
	if !b.nat && (b.filtering == "" || b.filtering == natclass.EndpointIndependent) {
		fwdPolicy = &policyAccept
	}
	fwd := b.chain("forward", nftables.ChainTypeFilter, nftables.ChainHookForward, nftables.ChainPriorityFilter, fwdPolicy)
	if b.n.BlockUDP {
		b.rule(fwd, append(nftL4(unix.IPPROTO_UDP), nftVerdict(drop))...)
	}
	b.rule(fwd, append(nftCtState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), nftVerdict(accept))...)
	b.rule(fwd, append(nftIf(expr.MetaKeyIIFNAME, b.r.LAN), nftVerdict(accept))...)
	if b.nat {
		// Admitted by the prerouting DNAT: an existing mapping that the
		// filter lets this remote reach, or a hairpinned packet.
		b.rule(fwd, append(nftCtStatus(ctStatusDNAT), nftVerdict(accept))...)
	} else if b.allowed != nil {
		b.rule(fwd, nftJoin(nftIf(expr.MetaKeyIIFNAME, b.r.WAN),
			[]expr.Any{nftL4proto(nftReg32(0)), nftThDport(nftReg32(1)), nftSaddr(nftReg32(2)),
				&expr.Lookup{SourceRegister: nftReg32(0), SetName: b.allowed.Name, SetID: b.allowed.ID}},
			[]expr.Any{nftVerdict(accept)})...)
	}
}

// routerInput filters what reaches the router itself, and what its own
// stack sends to the WAN.
func (b *ruleBuilder) routerInput() {
	accept, drop := expr.VerdictAccept, expr.VerdictDrop
	policyAccept := nftables.ChainPolicyAccept
	// The router itself. Unsolicited UDP and TCP from the WAN reach its
	// stack, so conntrack records them as Linux routers without an input
	// filter do; that is what makes the conntrack trap real here (a later
	// outbound packet to the same peer collides with the unreplied entry
	// and gets another external port). The stack's answers (ICMP port
	// unreachable, TCP RST) are dropped on the way out to the WAN, so from
	// outside the packet vanishes silently like at real CPE; the LAN gets
	// them, as from a router whose LAN zone accepts input (OpenWrt's
	// default), which is how a host learns at once that the router runs
	// no port-mapping daemon.
	in := b.chain("input", nftables.ChainTypeFilter, nftables.ChainHookInput, nftables.ChainPriorityFilter, &policyAccept)
	b.rule(in, append(nftCtState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), nftVerdict(accept))...)
	b.rule(in, append(nftL4(unix.IPPROTO_ICMP), nftVerdict(accept))...)
	if b.nat {
		// Without hairpinning a LAN packet to the public address ends here.
		b.rule(in, nftJoin(nftIf(expr.MetaKeyIIFNAME, b.r.LAN), nftDaddr(b.r.Public), []expr.Any{nftVerdict(drop)})...)
	}
	for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
		b.rule(in, nftJoin(nftIf(expr.MetaKeyIIFNAME, b.r.WAN), nftL4(proto), []expr.Any{nftVerdict(accept)})...)
	}
	b.rule(in, append(nftIf(expr.MetaKeyIIFNAME, b.r.WAN), nftVerdict(drop))...)
	output := b.chain("output", nftables.ChainTypeFilter, nftables.ChainHookOutput, nftables.ChainPriorityFilter, &policyAccept)
	b.rule(output, nftJoin(nftIf(expr.MetaKeyOIFNAME, b.r.WAN), nftL4(unix.IPPROTO_ICMP),
		[]expr.Any{&expr.Payload{DestRegister: regV1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: regV1, Data: []byte{icmpDestUnreachable}}, nftVerdict(drop)})...)
	b.rule(output, nftJoin(nftIf(expr.MetaKeyOIFNAME, b.r.WAN), nftL4(unix.IPPROTO_TCP),
		[]expr.Any{&expr.Payload{DestRegister: regV1, Base: expr.PayloadBaseTransportHeader, Offset: tcpFlagsOffset, Len: 1},
			&expr.Bitwise{SourceRegister: regV1, DestRegister: regV1, Len: 1, Mask: []byte{tcpFlagRST}, Xor: []byte{0}},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: regV1, Data: []byte{0}}, nftVerdict(drop)})...)
}

// recorded lists the protocols whose flows the record chain writes into
// the sets: UDP and TCP, or only UDP when TCP has plain masquerade of its
// own (NAT.TCP), so no TCP flow is ever admitted by DNAT or an allow-set.
func recorded(n NAT) []byte {
	if n.TCP != nil {
		return []byte{unix.IPPROTO_UDP}
	}
	return []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP}
}

// checkTCP rejects a TCP behaviour the router cannot build: TCP of its own
// is plain masquerade, port-preserving (EIM) or fully random (APDM), with
// conntrack's filtering (APDF), on a NAT.
func checkTCP(n NAT) error {
	t := n.TCP
	if t == nil {
		return nil
	}
	if n.Mapping == "" || n.BlockUDP {
		return fmt.Errorf("TCP behaviour of its own on a router without UDP NAT: %w", ErrNotSupported)
	}
	switch {
	case t.Filtering != "" && t.Filtering != natclass.AddressAndPortDependent:
		return fmt.Errorf("TCP filtering %q: TCP of its own is plain masquerade, address-and-port-dependent: %w", t.Filtering, ErrNotSupported)
	case t.Mapping == natclass.EndpointIndependent && (t.Allocation == "" || t.Allocation == natclass.Preserving):
	case t.Mapping == natclass.AddressAndPortDependent && t.Allocation == natclass.Random:
	default:
		return fmt.Errorf("TCP mapping %q with %q allocation: want endpoint-independent preserving or address-and-port-dependent random: %w", t.Mapping, t.Allocation, ErrNotSupported)
	}
	if t.Hairpinning || t.Inner != nil || t.TCP != nil || t.BlockUDP || t.PortMapping {
		return fmt.Errorf("TCP behaviour: only mapping, filtering and allocation can differ from UDP: %w", ErrNotSupported)
	}
	return nil
}

// seqPortMap adds the map from `numgen inc` values to external ports:
// value k → seqPortBase + k*step, so each new flow takes the next port.
func seqPortMap(c *nftables.Conn, t *nftables.Table, step int) (*nftables.Set, error) {
	if step <= 0 {
		step = 1
	}
	s := &nftables.Set{Table: t, ID: setIDSeqPorts, Name: "seqports", IsMap: true, Constant: true,
		KeyType: nftables.TypeInteger, DataType: nftables.TypeInetService, KeyByteOrder: binaryutil.NativeEndian}
	if err := c.AddSet(s, nil); err != nil {
		return nil, fmt.Errorf("add sequential port map: %w", err)
	}
	span := 65535 - seqPortBase
	batch := make([]nftables.SetElement, 0, seqBatch)
	for k := range seqPorts {
		port := seqPortBase + (k*step)%span
		batch = append(batch, nftables.SetElement{
			Key: binaryutil.NativeEndian.PutUint32(uint32(k)),
			Val: binary.BigEndian.AppendUint16(nil, uint16(port)),
		})
		if len(batch) == seqBatch || k == seqPorts-1 {
			if err := c.SetAddElements(s, batch); err != nil {
				return nil, fmt.Errorf("fill sequential port map: %w", err)
			}
			batch = batch[:0]
		}
	}
	return s, nil
}

// lossRules drops a share of packets crossing each listed interface of the
// internet namespace, in both directions: routed (family IPv4) or bridged
// (family bridge, where the interfaces are the switch's ports).
func lossRules(c *nftables.Conn, family nftables.TableFamily, loss map[string]float64) error {
	t := c.AddTable(&nftables.Table{Family: family, Name: nftTable})
	accept := nftables.ChainPolicyAccept
	fwd := c.AddChain(&nftables.Chain{Name: "loss", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	for ifc, p := range loss {
		n := uint32(p*lossScale + 0.5)
		if n == 0 {
			continue
		}
		for _, key := range []expr.MetaKey{expr.MetaKeyIIFNAME, expr.MetaKeyOIFNAME} {
			c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: nftJoin(nftIf(key, ifc), []expr.Any{
				&expr.Numgen{Register: regV1, Type: unix.NFT_NG_RANDOM, Modulus: lossScale},
				// numgen writes host byte order; lt compares bytes as big endian.
				&expr.Byteorder{SourceRegister: regV1, DestRegister: regV1, Op: expr.ByteorderHton, Len: 4, Size: 4},
				&expr.Cmp{Op: expr.CmpOpLt, Register: regV1, Data: binaryutil.BigEndian.PutUint32(n)},
				nftVerdict(expr.VerdictDrop),
			})})
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables loss rules: %w", err)
	}
	return nil
}
