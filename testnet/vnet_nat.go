package testnet

import (
	"math/rand/v2"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/natlab/natlab/natclass"
)

// External ports a NAT may hand out. Ports below 1024 are left alone, as
// real NATs do, so a mapped port never looks like a privileged service.
const (
	minNATPort  = 1024
	maxNATPort  = 65535
	natPortSpan = maxNATPort - minNATPort + 1
)

// A sequential allocator starts at a seeded port in this window so that a
// test sees a long run of steps before the allocator wraps at 65535.
const (
	sequentialBaseMin = 20000
	sequentialBaseMax = 40000
)

// randomDraws is how many random ports a random allocator tries before it
// falls back to scanning for a free one; with a sparse table the first draw
// nearly always succeeds, the scan only guards a full table.
const randomDraws = 64

// Mapping is one entry of an in-process NAT's table, as seen at snapshot
// time. For a firewall layer (no translation) External equals Internal.
type Mapping struct {
	// Internal is the endpoint inside the NAT.
	Internal netip.AddrPort `json:"internal"`
	// External is the endpoint the NAT shows outside.
	External netip.AddrPort `json:"external"`
	// Remote is what the mapping is keyed on besides Internal: invalid
	// for endpoint-independent mapping, port 0 for address-dependent.
	Remote netip.AddrPort `json:"remote,omitzero"`
	// Idle is the time since the last outbound packet refreshed it.
	Idle time.Duration `json:"idle"`
}

// NATStats counts what one in-process NAT layer did with packets.
type NATStats struct {
	Out          uint64 `json:"out"`           // translated inside → outside
	In           uint64 `json:"in"`            // translated outside → inside
	Hairpinned   uint64 `json:"hairpinned"`    // turned around inside
	Created      uint64 `json:"created"`       // mappings created
	Expired      uint64 `json:"expired"`       // mappings removed after idling
	DropBlocked  uint64 `json:"drop_blocked"`  // BlockUDP
	DropNoMap    uint64 `json:"drop_no_map"`   // inbound to a port with no live mapping
	DropFiltered uint64 `json:"drop_filtered"` // inbound refused by the filtering behaviour
	DropHairpin  uint64 `json:"drop_hairpin"`  // hairpin attempted with Hairpinning off
	DropNoPort   uint64 `json:"drop_no_port"`  // no free external port
}

// NATView is a snapshot of one NAT layer of an in-process site.
type NATView struct {
	// Name is "nat", or "cgn" and "home" for double NAT, or "firewall"
	// when the layer filters without translating.
	Name string `json:"name"`
	// WAN is the layer's outside address.
	WAN      netip.Addr `json:"wan"`
	Mappings []Mapping  `json:"mappings"`
	Stats    NATStats   `json:"stats"`
}

type mapKey struct {
	internal netip.AddrPort
	remote   netip.AddrPort
}

type mapping struct {
	key      mapKey
	external netip.AddrPort
	sentAddr map[netip.Addr]struct{}     // remote addresses sent to, for address-dependent filtering
	sentEP   map[netip.AddrPort]struct{} // remote endpoints sent to, for address-and-port-dependent filtering
	lastOut  time.Time
	created  time.Time
	replied  bool // an inbound packet got through
	// established: traffic both ways for more than establishedAfter, so
	// the longer established lifetime applies (as Linux's UDP streams).
	established bool
}

// natLayer is one NAT (or stateful firewall) of a site. Packets from the
// inside enter fromLAN and leave through up; packets from the outside enter
// fromWAN and leave through down. It never holds its lock while handing a
// packet on, so chains of layers and hairpins cannot deadlock.
//
// Mappings are refreshed by outbound traffic only (RFC 4787 REQ-6 requires
// outbound refresh and leaves inbound refresh optional); inbound packets
// neither refresh nor extend them. Expiry is evaluated lazily when a
// mapping is looked up, so no timer runs per mapping.
type natLayer struct {
	name      string
	cfg       NAT
	wan       netip.Addr
	translate bool // false: a firewall that keeps addresses as they are
	lifetime  time.Duration
	up, down  func(packet)

	mu        sync.Mutex
	rng       *rand.Rand
	byKey     map[mapKey]*mapping
	byPort    map[uint16]*mapping
	lastPort  int // sequential allocator: the previous external port
	lastSweep time.Time
	stats     NATStats
}

func newNATLayer(name string, cfg NAT, wan netip.Addr, seed uint64) *natLayer {
	cfg.Inner = nil
	n := &natLayer{
		name:      name,
		cfg:       cfg,
		wan:       wan,
		translate: cfg.Mapping != "",
		lifetime:  cfg.MappingLifetime,
		rng:       rand.New(rand.NewPCG(seed, seed^0x5851f42d4c957f2d)),
		byKey:     map[mapKey]*mapping{},
		byPort:    map[uint16]*mapping{},
		lastSweep: time.Now(),
	}
	if n.lifetime <= 0 {
		n.lifetime = DefaultMappingLifetime
	}
	if n.cfg.Step == 0 {
		n.cfg.Step = 1
	}
	base := sequentialBaseMin + n.rng.IntN(sequentialBaseMax-sequentialBaseMin)
	n.lastPort = base - n.cfg.Step
	return n
}

// stateless reports whether the layer passes packets untouched: no
// translation and no filter.
func (n *natLayer) stateless() bool { return !n.translate && n.cfg.Filtering == "" }

// fromLAN handles a packet leaving the inside.
func (n *natLayer) fromLAN(p packet) {
	n.mu.Lock()
	if n.cfg.BlockUDP {
		n.stats.DropBlocked++
		n.mu.Unlock()
		return
	}
	if n.translate && p.dst.Addr() == n.wan {
		n.hairpinLocked(p) // unlocks
		return
	}
	if !n.stateless() {
		m := n.outboundLocked(p.src, p.dst, time.Now())
		if m == nil {
			n.stats.DropNoPort++
			n.mu.Unlock()
			return
		}
		p.src = m.external
	}
	n.stats.Out++
	n.mu.Unlock()
	n.up(p)
}

// hairpinLocked turns a packet addressed to the NAT's own public address
// back inside, its source rewritten to the sender's mapping. Hairpinned
// packets bypass filtering, as Linux's DNAT-based hairpin does, so the
// Hairpinning flag alone decides (which is what NAT.Expect assumes).
func (n *natLayer) hairpinLocked(p packet) {
	if !n.cfg.Hairpinning {
		n.stats.DropHairpin++
		n.mu.Unlock()
		return
	}
	now := time.Now()
	from := n.outboundLocked(p.src, p.dst, now)
	if from == nil {
		n.stats.DropNoPort++
		n.mu.Unlock()
		return
	}
	to := n.liveByPortLocked(p.dst.Port(), now)
	if to == nil {
		n.stats.DropNoMap++
		n.mu.Unlock()
		return
	}
	n.stats.Hairpinned++
	p.src, p.dst = from.external, to.key.internal
	n.mu.Unlock()
	n.down(p)
}

// fromWAN handles a packet arriving from the outside.
func (n *natLayer) fromWAN(p packet) {
	n.mu.Lock()
	if n.cfg.BlockUDP {
		n.stats.DropBlocked++
		n.mu.Unlock()
		return
	}
	if p.dst.Addr() != n.wan {
		n.stats.DropNoMap++
		n.mu.Unlock()
		return
	}
	if n.stateless() {
		n.stats.In++
		n.mu.Unlock()
		n.down(p)
		return
	}
	m := n.liveByPortLocked(p.dst.Port(), time.Now())
	if m == nil {
		n.stats.DropNoMap++
		n.mu.Unlock()
		return
	}
	if !n.allowedLocked(m, p.src) {
		n.stats.DropFiltered++
		n.mu.Unlock()
		return
	}
	n.stats.In++
	m.replied = true
	p.dst = m.key.internal
	n.mu.Unlock()
	n.down(p)
}

func (n *natLayer) allowedLocked(m *mapping, src netip.AddrPort) bool {
	switch n.cfg.Filtering {
	case natclass.AddressDependent:
		_, ok := m.sentAddr[src.Addr()]
		return ok
	case natclass.AddressAndPortDependent:
		_, ok := m.sentEP[src]
		return ok
	}
	return true
}

// key is what distinguishes mappings under the layer's mapping behaviour.
// A firewall keys on the inside endpoint alone: it has one "mapping" (its
// filter state) per socket.
func (n *natLayer) key(src, dst netip.AddrPort) mapKey {
	switch n.cfg.Mapping {
	case natclass.AddressDependent:
		return mapKey{internal: src, remote: netip.AddrPortFrom(dst.Addr(), 0)}
	case natclass.AddressAndPortDependent:
		return mapKey{internal: src, remote: dst}
	}
	return mapKey{internal: src}
}

func (n *natLayer) expired(m *mapping, now time.Time) bool {
	life := n.lifetime
	if m.established {
		life = n.cfg.establishedLifetime()
	}
	return now.Sub(m.lastOut) >= life
}

func (n *natLayer) removeLocked(m *mapping) {
	delete(n.byKey, m.key)
	if n.byPort[m.external.Port()] == m {
		delete(n.byPort, m.external.Port())
	}
	n.stats.Expired++
}

// liveByPortLocked returns the mapping owning an external port, dropping
// it first if it has expired.
func (n *natLayer) liveByPortLocked(port uint16, now time.Time) *mapping {
	m := n.byPort[port]
	if m != nil && n.expired(m, now) {
		n.removeLocked(m)
		return nil
	}
	return m
}

// outboundLocked finds or creates the mapping for a flow, records the
// remote for filtering and refreshes it. It returns nil when no external
// port is free.
func (n *natLayer) outboundLocked(src, dst netip.AddrPort, now time.Time) *mapping {
	k := n.key(src, dst)
	m := n.byKey[k]
	if m != nil && n.expired(m, now) {
		n.removeLocked(m)
		m = nil
	}
	if m == nil {
		n.sweepLocked(now)
		ext := src
		if n.translate {
			port, ok := n.allocateLocked(src.Port(), now)
			if !ok {
				return nil
			}
			ext = netip.AddrPortFrom(n.wan, port)
		}
		m = &mapping{key: k, external: ext, created: now, sentAddr: map[netip.Addr]struct{}{}, sentEP: map[netip.AddrPort]struct{}{}}
		n.byKey[k] = m
		n.byPort[ext.Port()] = m
		n.stats.Created++
	}
	m.lastOut = now
	if m.replied && now.Sub(m.created) >= establishedAfter {
		m.established = true
	}
	m.sentAddr[dst.Addr()] = struct{}{}
	m.sentEP[dst] = struct{}{}
	return m
}

// sweepLocked drops expired mappings at most a few times per lifetime, so
// that a long run with many short flows does not grow the table forever.
func (n *natLayer) sweepLocked(now time.Time) {
	if now.Sub(n.lastSweep) < n.lifetime/4 {
		return
	}
	n.lastSweep = now
	for _, m := range n.byKey {
		if n.expired(m, now) {
			n.removeLocked(m)
		}
	}
}

// portFree reports whether an external port can be handed out, reclaiming
// it if its mapping has expired.
func (n *natLayer) portFreeLocked(port int, now time.Time) bool {
	return n.liveByPortLocked(uint16(port), now) == nil
}

func wrapPort(p int) int {
	return minNATPort + ((p-minNATPort)%natPortSpan+natPortSpan)%natPortSpan
}

// allocateLocked picks the external port of a new mapping.
func (n *natLayer) allocateLocked(internal uint16, now time.Time) (uint16, bool) {
	switch n.cfg.Allocation {
	case natclass.Sequential:
		p := n.lastPort
		for range natPortSpan {
			p = wrapPort(p + n.cfg.Step)
			if n.portFreeLocked(p, now) {
				n.lastPort = p
				return uint16(p), true
			}
		}
		return 0, false
	case natclass.Random:
		for range randomDraws {
			p := minNATPort + n.rng.IntN(natPortSpan)
			if n.portFreeLocked(p, now) {
				return uint16(p), true
			}
		}
		return n.scanLocked(minNATPort+n.rng.IntN(natPortSpan), now)
	}
	// Preserving (and the default): the internal port if free, else the
	// next free one.
	if n.portFreeLocked(int(internal), now) {
		return internal, true
	}
	return n.scanLocked(int(internal)+1, now)
}

func (n *natLayer) scanLocked(from int, now time.Time) (uint16, bool) {
	for i := range natPortSpan {
		p := wrapPort(from + i)
		if n.portFreeLocked(p, now) {
			return uint16(p), true
		}
	}
	return 0, false
}

// view snapshots the layer: live mappings sorted by external port.
func (n *natLayer) view() NATView {
	n.mu.Lock()
	defer n.mu.Unlock()
	now := time.Now()
	v := NATView{Name: n.name, WAN: n.wan, Stats: n.stats}
	for _, m := range n.byKey {
		if n.expired(m, now) {
			continue
		}
		v.Mappings = append(v.Mappings, Mapping{
			Internal: m.key.internal, External: m.external, Remote: m.key.remote, Idle: now.Sub(m.lastOut),
		})
	}
	sort.Slice(v.Mappings, func(i, j int) bool {
		a, b := v.Mappings[i], v.Mappings[j]
		if a.External != b.External {
			return a.External.Compare(b.External) < 0
		}
		return a.Internal.Compare(b.Internal) < 0
	})
	return v
}
