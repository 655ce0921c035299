package tui

import (
	"github.com/natlab/natlab/fleet"
	"testing"
	"time"

	"github.com/natlab/natlab/lab"
	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/probe"
	"github.com/natlab/natlab/rendezvous"
	"github.com/natlab/natlab/testnet"
)

// Fixtures: the shapes the probe really emits, with fixed numbers so the
// golden screens are stable.

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func selfProfile() *natclass.Profile {
	return &natclass.Profile{
		NATType: natclass.PortRestrictedCone, Mapping: natclass.EndpointIndependent, Filtering: natclass.AddressAndPortDependent,
		MappedAddress: "198.51.100.10:40000", LocalAddress: "10.0.1.2:40000", Hairpinning: natclass.No,
		PortAllocation: &natclass.PortAllocation{Pattern: natclass.Preserving}, Server: "203.0.113.10:3478", RTTMillis: 4.2,
		TCP: &natclass.TCPProfile{Reached: natclass.Yes, Mapping: natclass.EndpointIndependent, Filtering: natclass.AddressAndPortDependent,
			MappedAddress: "198.51.100.10:40001", PortAllocation: &natclass.PortAllocation{Pattern: natclass.Preserving}},
	}
}

func peerSummary() natclass.Summary {
	return natclass.Summary{NATType: natclass.FullCone, Mapping: natclass.EndpointIndependent, Filtering: natclass.EndpointIndependent,
		Allocation: natclass.Preserving, Mapped: "198.51.100.20:40000",
		// A full cone built from UDP-only rules: TCP is plain masquerade.
		TCPProfile: &natclass.TCPSummary{Reached: natclass.Yes, Mapping: natclass.EndpointIndependent,
			Filtering: natclass.AddressAndPortDependent, Allocation: natclass.Preserving}}
}

func ev(stage probe.Stage, msg string, ms float64, data any) probe.Event {
	return probe.Event{Time: t0.Add(time.Duration(ms) * time.Millisecond), Stage: stage, Message: msg, Elapsed: ms, Data: data, Side: "A"}
}

func techs() []probe.TechniqueResult {
	return []probe.TechniqueResult{
		{Technique: natclass.SameLAN, Predicted: natclass.Skipped, Measured: natclass.Skipped, Reason: "different public addresses: not one LAN"},
		{Technique: natclass.DirectUDP, Predicted: natclass.Success, Measured: natclass.Success, Reason: "one side filters endpoint-independently",
			Attempts: 3, TimeToFirstPacketMillis: 21.4, RTTMillis: 10.6, Remote: "198.51.100.20:40000"},
		{Technique: natclass.PredictUDP, Predicted: natclass.Skipped, Measured: natclass.Skipped, Reason: "no sequential allocator"},
		{Technique: natclass.Birthday, Predicted: natclass.Skipped, Measured: natclass.Skipped, Reason: "no random allocator"},
		{Technique: natclass.MappedUDP, Predicted: natclass.Skipped, Measured: natclass.Skipped, Reason: "no gateway maps ports"},
		{Technique: natclass.DirectTCP, Predicted: natclass.Skipped, Measured: natclass.Skipped, Reason: "the in-process lab has no TCP"},
		{Technique: "relay-udp", Predicted: natclass.Success, Measured: natclass.Success, Reason: "TURN over UDP", Attempts: 1, TimeToFirstPacketMillis: 30.2, RTTMillis: 24.8},
	}
}

// prediction is the Data of a technique's start event.
func prediction(tr probe.TechniqueResult) natclass.Prediction {
	return natclass.Prediction{Technique: tr.Technique, Outcome: tr.Predicted, Reason: tr.Reason}
}

// probeEvents is a probe up to the middle of its punching.
func probeEvents() []probe.Event {
	ts := techs()
	return []probe.Event{
		ev("profile", "profiling this host's NAT against 203.0.113.10:3478", 0, nil),
		ev("pair", "pairing code: abcd-efgh-ijkl-mnop", 1, probe.PairingCode{Code: "abcd-efgh-ijkl-mnop", Server: "203.0.113.10:3478", Mode: rendezvous.Create}),
		ev("profile", "this host: port-restricted-cone", 812, selfProfile()),
		ev("pair", "waiting for the peer", 813, nil),
		ev("pair", "paired; peer is full-cone", 1204, peerSummary()),
		{Stage: "technique", Step: 1, Elapsed: 1205, Side: "A", Message: "same-lan: predicted skipped (different public addresses: not one LAN)", Data: prediction(ts[0])},
		{Stage: "technique", Step: 1, Elapsed: 1210, Side: "A", Outcome: "skipped", Message: "same-lan: skipped", Data: ts[0]},
		{Stage: "technique", Step: 2, Elapsed: 1211, Side: "A", Message: "udp: predicted success (one side filters endpoint-independently)", Data: prediction(ts[1])},
	}
}

func probeReport() *probe.Report {
	ts := techs()
	return &probe.Report{
		Schema: probe.ProbeSchema, Side: "A", Server: "203.0.113.10:3478", Self: selfProfile(), Peer: peerSummary(), Techniques: ts,
		Verdict: probe.Verdict{Direct: true, Technique: natclass.DirectUDP,
			Summary: "Direct P2P works: UDP hole punch, first packet after 21 ms (2.0 RTT), direct RTT 10.6 ms"},
		DurationMillis: 2480,
	}
}

var matrixPresets = []string{"full-cone", "port-restricted-cone", "symmetric", "symmetric-sequential"}

func matrixReport() *lab.MatrixReport {
	r := &lab.MatrixReport{Schema: lab.MatrixSchema, Backend: "in-process", Presets: matrixPresets, Match: false, DurationMillis: 9300,
		Excluded: map[string]string{"udp-blocked": "UDP is blocked and the in-process lab has no TCP: use --kernel"}}
	best := map[[2]string]natclass.Technique{
		{"full-cone", "full-cone"}: natclass.DirectUDP, {"full-cone", "port-restricted-cone"}: natclass.DirectUDP,
		{"full-cone", "symmetric"}: natclass.DirectUDP, {"full-cone", "symmetric-sequential"}: natclass.DirectUDP,
		{"port-restricted-cone", "port-restricted-cone"}: natclass.DirectUDP, {"port-restricted-cone", "symmetric"}: natclass.Birthday,
		{"port-restricted-cone", "symmetric-sequential"}: natclass.PredictUDP,
	}
	for i, a := range matrixPresets {
		for _, b := range matrixPresets[i:] {
			p := lab.MatrixPair{A: a, B: b, Techniques: techs()[:6]}
			if t, ok := best[[2]string{a, b}]; ok {
				p.Verdict = probe.Verdict{Direct: true, Technique: t, Summary: "Direct P2P works: " + string(t)}
			} else {
				p.Verdict = probe.Verdict{Summary: "Relay required: no direct technique worked (both sides map per destination)"}
				p.Techniques = []probe.TechniqueResult{
					{Technique: natclass.SameLAN, Predicted: natclass.Skipped, Measured: natclass.Skipped, Reason: "different public addresses: not one LAN"},
					{Technique: natclass.DirectUDP, Predicted: natclass.Fail, Measured: natclass.Fail, Attempts: 28, Reason: "both sides map per destination"},
				}
			}
			if a == "symmetric" && b == "symmetric-sequential" {
				p.Mismatches = []string{"udp-predict: predicted success, measured fail"}
			}
			r.Pairs = append(r.Pairs, p)
		}
	}
	return r
}

func labReport() *lab.Report {
	a, b := selfProfile(), selfProfile()
	b.NATType, b.Mapping, b.MappedAddress = natclass.Symmetric, natclass.AddressAndPortDependent, "198.51.100.20:51234"
	b.PortAllocation = &natclass.PortAllocation{Pattern: natclass.Random}
	// The in-process lab has no TCP.
	noTCP := &natclass.TCPProfile{NotRun: []natclass.NotRun{{Test: natclass.TestTCPMapping, Reason: "this network stack has no TCP"}}}
	a.TCP, b.TCP = noTCP, noTCP
	return &lab.Report{Schema: lab.Schema, Backend: "in-process", Server: []string{"203.0.113.10:3478", "203.0.113.11:3479"}, Match: true, DurationMillis: 1530,
		Sites: []lab.Site{
			{Name: "a", Preset: "port-restricted-cone", Public: "198.51.100.10", Expected: testnet.Expected{NATType: natclass.PortRestrictedCone}, Profile: a},
			{Name: "b", Preset: "symmetric", Public: "198.51.100.20", Expected: testnet.Expected{NATType: natclass.Symmetric}, Profile: b},
		}}
}

// fleetReport is a small fleet through the real fleet package: cones,
// symmetric NATs (one a carrier's), a UDP-blocked host and an open one.
func fleetReport(t *testing.T) *fleet.Report {
	t.Helper()
	ei, apd := natclass.EndpointIndependent, natclass.AddressAndPortDependent
	hosts := []struct {
		s natclass.Summary
		n int
	}{
		{natclass.Summary{NATType: natclass.PortRestrictedCone, Mapping: ei, Filtering: apd, Allocation: natclass.Preserving, TCP: true}, 5},
		{natclass.Summary{NATType: natclass.FullCone, Mapping: ei, Filtering: ei, Allocation: natclass.Preserving, TCP: true}, 1},
		{natclass.Summary{NATType: natclass.Symmetric, Mapping: apd, Filtering: apd, Allocation: natclass.Random, TCP: true}, 3},
		{natclass.Summary{NATType: natclass.UDPBlocked, TCP: true}, 1},
		{natclass.Summary{NATType: natclass.Open, Mapping: ei, Filtering: ei, TCP: true}, 1},
	}
	f := fleet.New()
	for _, h := range hosts {
		// Linux NATs treat TCP as UDP; the UDP-blocked site's TCP goes
		// through a port-restricted cone.
		tp := natclass.TCPSummary{Reached: natclass.Yes, Mapping: h.s.Mapping, Filtering: h.s.Filtering, Allocation: h.s.Allocation}
		if h.s.NATType == natclass.UDPBlocked {
			tp.Mapping, tp.Filtering, tp.Allocation = ei, apd, natclass.Preserving
		}
		h.s.TCPProfile = &tp
		for range h.n {
			if err := f.Add(fleet.Host{Summary: h.s}); err != nil {
				t.Fatal(err)
			}
		}
	}
	return f.Report(fleet.Options{TrafficBps: 1e6})
}
