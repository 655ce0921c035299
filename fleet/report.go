package fleet

import (
	"slices"

	"github.com/natlab/natlab/internal/buildinfo"
	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/probe"
)

// Options shape a report.
type Options struct {
	// TrafficBps is the traffic of one pair (a call's bit rate, both
	// directions together); with it the report gives the relay bandwidth.
	TrafficBps float64
}

// Report is the fleet's prediction: the JSON document of `natlab fleet`.
// Every share is of the weighted pairs: a pair of hosts weighs the
// product of their weights.
type Report struct {
	Schema        string  `json:"schema"`         // Schema
	NatlabVersion string  `json:"natlab_version"` // the build that wrote it
	Hosts         int     `json:"hosts"`          // hosts read
	Classes       int     `json:"classes"`        // distinct predictor inputs among them
	Weight        float64 `json:"weight"`         // Σ host weights
	Pairs         int64   `json:"pairs"`          // unordered pairs of hosts
	// DirectShare, RelayShare and UnknownShare add up to 1 (when there
	// are pairs); UnknownShare is the pairs the profiles cannot predict
	// (a TCP profile that was not measured).
	DirectShare  float64     `json:"direct_share"`
	RelayShare   float64     `json:"relay_share"`
	UnknownShare float64     `json:"unknown_share"`
	Relay        RelayShares `json:"relay"`
	// Techniques is the share of pairs whose best technique is the key:
	// direct ones, relay-udp, relay-tcp, none, or unknown.
	Techniques map[string]float64 `json:"techniques"`
	// ByNATType is sorted by share of the relayed pairs, largest first.
	ByNATType []NATTypeShare `json:"by_nat_type"`
	// Cells is the NAT type × NAT type table (each unordered pair once).
	Cells []Cell `json:"cells"`
	// TrafficBps is Options.TrafficBps; RelayBandwidthBps is what the
	// relays carry if every relayed pair sends it at once: relayed
	// (weighted) pairs × TrafficBps.
	TrafficBps        float64 `json:"traffic_bps,omitempty"`
	RelayBandwidthBps float64 `json:"relay_bandwidth_bps"`
	// Keepalive is the cost of keeping the direct UDP paths open, from
	// the hosts' measured binding lifetimes; null when none was measured.
	Keepalive *Keepalive `json:"keepalive,omitempty"`
}

// RelayShares split the relayed pairs by how they reach the relay.
type RelayShares struct {
	UDP     float64 `json:"udp"`      // TURN over UDP
	TCPOnly float64 `json:"tcp_only"` // TURN over TCP or TLS: a side's UDP is blocked
	NoPath  float64 `json:"no_path"`  // not even a relay
}

// NATTypeShare is what one NAT type does to the fleet. A pair of two
// types counts for both.
type NATTypeShare struct {
	NATType      natclass.NATType `json:"nat_type"`
	Hosts        int              `json:"hosts"`
	HostShare    float64          `json:"host_share"`     // of the weight
	PairShare    float64          `json:"pair_share"`     // pairs with a host of this type
	DirectShare  float64          `json:"direct_share"`   // of those pairs, the share that goes direct
	ShareOfRelay float64          `json:"share_of_relay"` // of all relayed pairs, the share with a host of this type
}

// Cell is the pairs between two NAT types.
type Cell struct {
	A           natclass.NATType `json:"a"`
	B           natclass.NATType `json:"b"`
	PairShare   float64          `json:"pair_share"`   // of all pairs
	DirectShare float64          `json:"direct_share"` // of this cell's pairs
	Best        string           `json:"best"`         // the technique most of its pairs use
}

// Keepalive sums what keeping every direct UDP path open costs.
type Keepalive struct {
	// PairShare is the share of the direct UDP pairs whose two hosts'
	// lifetimes are known; the figures below are over those.
	PairShare float64 `json:"pair_share"`
	// PacketsPerHour is the keepalives all those pairs send in an hour
	// (weighted); PerPair the mean for one pair.
	PacketsPerHour        float64 `json:"packets_per_hour"`
	PacketsPerHourPerPair float64 `json:"packets_per_hour_per_pair"`
}

// NATTypes is the order of the table's rows and columns.
var NATTypes = []natclass.NATType{natclass.Open, natclass.FullCone, natclass.RestrictedCone,
	natclass.PortRestrictedCone, natclass.Symmetric, natclass.SymmetricFirewall, natclass.UDPBlocked, natclass.Unknown}

func typeIndex(t natclass.NATType) int {
	if i := slices.Index(NATTypes, t); i >= 0 {
		return i
	}
	return len(NATTypes) - 1 // "" and anything newer count as unknown
}

// cellAcc accumulates one NAT-type cell's pair weights.
type cellAcc struct {
	total, direct float64
	tech          map[string]float64
}

// tally is the weighted pair mass of a report before normalising.
type tally struct {
	total, direct float64
	unknown       float64
	tech          map[string]float64
	cells         map[[2]int]*cellAcc
	kaPairs       float64 // direct UDP pair mass with known keepalive cost
	kaUDP         float64 // all direct UDP pair mass
	kaPackets     float64
}

// Report predicts every pair of classes once and weighs it.
func (f *Fleet) Report(o Options) *Report {
	t := &tally{tech: map[string]float64{}, cells: map[[2]int]*cellAcc{}}
	cs := make([]*class, len(f.order))
	for i, k := range f.order {
		cs[i] = f.classes[k]
	}
	for i, a := range cs {
		for j := i; j < len(cs); j++ {
			t.add(a, cs[j], i == j)
		}
	}
	return f.build(cs, t, o)
}

// add weighs the pairs between classes a and b (the pairs inside a when
// same).
func (t *tally) add(a, b *class, same bool) {
	var mass, kaMass, kaPackets float64
	if same {
		mass = (a.w*a.w - a.w2) / 2
		kaMass = (a.lw*a.lw - a.lw2) / 2
		kaPackets = a.lw*a.ka - a.ka2
	} else {
		mass = a.w * b.w
		kaMass = a.lw * b.lw
		kaPackets = b.lw*a.ka + a.lw*b.ka
	}
	if mass <= 0 {
		return
	}
	best := Best(a.summary, b.summary)
	direct := isDirect(best)
	if best == Unknown {
		t.unknown += mass
	}
	t.total += mass
	t.tech[best] += mass
	ia, ib := typeIndex(a.summary.NATType), typeIndex(b.summary.NATType)
	if ia > ib {
		ia, ib = ib, ia
	}
	c := t.cells[[2]int{ia, ib}]
	if c == nil {
		c = &cellAcc{tech: map[string]float64{}}
		t.cells[[2]int{ia, ib}] = c
	}
	c.total += mass
	c.tech[best] += mass
	if direct {
		t.direct += mass
		c.direct += mass
	}
	if probe.KeptAlive(natclass.Technique(best)) {
		t.kaUDP += mass
		t.kaPairs += kaMass
		t.kaPackets += kaPackets
	}
}

func share(part, whole float64) float64 {
	if whole <= 0 {
		return 0
	}
	return part / whole
}

func (f *Fleet) build(cs []*class, t *tally, o Options) *Report {
	r := &Report{Schema: Schema, NatlabVersion: buildinfo.Version(), Hosts: f.hosts, Classes: len(cs), Techniques: map[string]float64{},
		Pairs: int64(f.hosts) * int64(f.hosts-1) / 2, TrafficBps: o.TrafficBps}
	for _, c := range cs {
		r.Weight += c.w
	}
	relayed := t.total - t.direct - t.unknown
	r.DirectShare, r.RelayShare, r.UnknownShare = share(t.direct, t.total), share(relayed, t.total), share(t.unknown, t.total)
	for k, m := range t.tech {
		r.Techniques[k] = share(m, t.total)
	}
	r.Relay = RelayShares{UDP: r.Techniques[string(natclass.RelayUDP)], TCPOnly: r.Techniques[string(natclass.RelayTCP)], NoPath: r.Techniques[NoPath]}
	r.RelayBandwidthBps = (t.tech[string(natclass.RelayUDP)] + t.tech[string(natclass.RelayTCP)]) * o.TrafficBps
	r.Cells = cells(t)
	r.ByNATType = byNATType(cs, t, r.Weight, relayed)
	if f.lifetimes > 0 && t.kaPairs > 0 {
		r.Keepalive = &Keepalive{PairShare: share(t.kaPairs, t.kaUDP), PacketsPerHour: t.kaPackets,
			PacketsPerHourPerPair: t.kaPackets / t.kaPairs}
	}
	return r
}

func cells(t *tally) []Cell {
	var out []Cell
	for ia := range NATTypes {
		for ib := ia; ib < len(NATTypes); ib++ {
			c := t.cells[[2]int{ia, ib}]
			if c == nil {
				continue
			}
			out = append(out, Cell{A: NATTypes[ia], B: NATTypes[ib], PairShare: share(c.total, t.total),
				DirectShare: share(c.direct, c.total), Best: heaviest(c.tech)})
		}
	}
	return out
}

// heaviest is the key with the largest mass (ties: the first in name
// order, so output is stable).
func heaviest(m map[string]float64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	best := ""
	for _, k := range keys {
		if best == "" || m[k] > m[best] {
			best = k
		}
	}
	return best
}

func byNATType(cs []*class, t *tally, weight, relayed float64) []NATTypeShare {
	rows := make([]NATTypeShare, len(NATTypes))
	seen := make([]bool, len(NATTypes))
	for _, c := range cs {
		i := typeIndex(c.summary.NATType)
		rows[i].NATType, seen[i] = NATTypes[i], true
		rows[i].Hosts += c.hosts
		rows[i].HostShare += share(c.w, weight)
	}
	for i := range NATTypes {
		var total, direct, unknown float64
		for j := range NATTypes {
			if c := t.cells[[2]int{min(i, j), max(i, j)}]; c != nil {
				total += c.total
				direct += c.direct
				unknown += c.tech[Unknown]
			}
		}
		rows[i].PairShare = share(total, t.total)
		rows[i].DirectShare = share(direct, total)
		rows[i].ShareOfRelay = share(total-direct-unknown, relayed)
	}
	var out []NATTypeShare
	for i, r := range rows {
		if seen[i] {
			out = append(out, r)
		}
	}
	// out is in NATTypes order, which breaks ties.
	slices.SortStableFunc(out, func(a, b NATTypeShare) int {
		switch {
		case a.ShareOfRelay > b.ShareOfRelay:
			return -1
		case a.ShareOfRelay < b.ShareOfRelay:
			return 1
		}
		return 0
	})
	return out
}
