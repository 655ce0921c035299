package natclass

import (
	"fmt"

	"github.com/natlab/natlab/internal/stuntx"
)

// Test names, as they appear in Profile.NotRun.
const (
	TestMapping         = "mapping"
	TestFiltering       = "filtering"
	TestHairpinning     = "hairpinning"
	TestPortAllocation  = "port_allocation"
	TestBindingLifetime = "binding_lifetime"
)

// Target is where a probe is sent, relative to the primary server.
type Target int

// Probe targets.
const (
	ToPrimary Target = iota // IP1:P1, the address the user gave
	ToAltIP                 // IP2:P1: OTHER-ADDRESS's IP with the primary port
	ToOther                 // IP2:P2: OTHER-ADDRESS itself
	ToSelf                  // the mapping socket's own mapped address (hairpin)
)

func (t Target) String() string {
	switch t {
	case ToPrimary:
		return "primary"
	case ToAltIP:
		return "alt-ip"
	case ToOther:
		return "other"
	case ToSelf:
		return "self"
	}
	return fmt.Sprintf("target(%d)", int(t))
}

// Socket names of the plan. Tests that would disturb each other's NAT
// state (filtering must only ever have talked to IP1:P1) get their own.
const (
	SockMapping   = "mapping"   // test I to every server, then mapping II/III
	SockFiltering = "filtering" // only ever sends to IP1:P1
	SockHairpin   = "hairpin"   // sends to the mapping socket's mapped address
	sockAlloc     = "alloc-"    // one fresh socket per port allocation sample
)

// ProbeID names a probe of the plan; After and SentAfter refer to it,
// and the discovery keeps each probe's result in a field of its own.
type ProbeID int

// The plan's probes; AllocSample(i) numbers the port allocation samples.
const (
	noProbe      ProbeID = iota
	MappingII            // RFC 5780 §4.3 test II: to IP2:P1
	MappingIII           // test III: to IP2:P2
	FilteringI           // RFC 5780 §4.4 test I, from the filtering socket
	FilteringII          // test II: answer from IP2:P2
	FilteringIII         // test III: answer from IP1:P2
	Hairpin              // RFC 5780 §4.5: to our own mapped address
	allocBase            // AllocSample(0); later samples follow
)

// AllocSample is the id of port allocation sample i.
func AllocSample(i int) ProbeID { return allocBase + ProbeID(i) }

// Alloc reports whether id is a port allocation sample, and which.
func (id ProbeID) Alloc() (int, bool) { return int(id - allocBase), id >= allocBase }

// Test is the RFC 5780 test the probe belongs to (a Test* name).
func (id ProbeID) Test() string {
	switch id {
	case MappingII, MappingIII:
		return TestMapping
	case FilteringI, FilteringII, FilteringIII:
		return TestFiltering
	case Hairpin:
		return TestHairpinning
	}
	if _, ok := id.Alloc(); ok {
		return TestPortAllocation
	}
	return ""
}

// Negative reports whether silence answers the probe: filtering II and
// III (the NAT dropped the answer) and hairpinning. Every other probe of
// the plan must be answered; its silence is a loss.
func (id ProbeID) Negative() bool { return id == FilteringII || id == FilteringIII || id == Hairpin }

// String is the probe's name in logs: "filtering-II", "alloc-3".
func (id ProbeID) String() string {
	switch id {
	case MappingII:
		return "mapping-II"
	case MappingIII:
		return "mapping-III"
	case FilteringI:
		return "filtering-I"
	case FilteringII:
		return "filtering-II"
	case FilteringIII:
		return "filtering-III"
	case Hairpin:
		return "hairpin"
	}
	if i, ok := id.Alloc(); ok {
		return fmt.Sprintf("alloc-%d", i)
	}
	return fmt.Sprintf("probe(%d)", int(id))
}

// Probe is one Binding request of the plan.
type Probe struct {
	ID ProbeID
	// Socket is the local socket it is sent from.
	Socket string
	// To is where it is sent.
	To Target
	// Change holds CHANGE-REQUEST flags.
	Change stuntx.ChangeRequest
	// After names a probe that must have completed first.
	After ProbeID
	// SentAfter names a probe whose first transmission must precede this
	// one's: the NAT then allocates the port allocation samples in order.
	SentAfter ProbeID
}

// NotRun is a test that could not be run, and why.
type NotRun struct {
	Test   string `json:"test"`   // a Test* name
	Reason string `json:"reason"` // one line, for people
}

// PlanInput is what the first round (test I against every server) found
// out, which decides the rest of the plan.
type PlanInput struct {
	// OtherAddress is true when the primary server sent OTHER-ADDRESS.
	OtherAddress bool
	// NAT is true when the mapped address differs from the local one.
	NAT bool
	// AllocSamples is the number of port allocation samples (0: skip).
	AllocSamples int
}

// BuildPlan returns the second round of probes, after test I, and the
// tests it cannot run. It is a pure function of its input.
func BuildPlan(in PlanInput) ([]Probe, []NotRun) {
	var ps []Probe
	var nr []NotRun
	if in.OtherAddress {
		ps = append(ps,
			// RFC 5780 §4.3: test II to IP2:P1, test III to IP2:P2,
			// from the socket whose test I mapping we know.
			Probe{ID: MappingII, Socket: SockMapping, To: ToAltIP},
			Probe{ID: MappingIII, Socket: SockMapping, To: ToOther},
			// RFC 5780 §4.4 on a socket that has only talked to IP1:P1.
			// Silence answers tests II and III; its wait comes from the
			// measured RTT like every probe after test I.
			Probe{ID: FilteringI, Socket: SockFiltering, To: ToPrimary},
			Probe{ID: FilteringII, Socket: SockFiltering, To: ToPrimary, Change: stuntx.ChangeIP | stuntx.ChangePort, After: FilteringI},
			Probe{ID: FilteringIII, Socket: SockFiltering, To: ToPrimary, Change: stuntx.ChangePort, After: FilteringI},
		)
	} else {
		const why = "server does not support RFC 5780 (no OTHER-ADDRESS)"
		if in.NAT {
			nr = append(nr, NotRun{Test: TestMapping, Reason: why})
		}
		nr = append(nr, NotRun{Test: TestFiltering, Reason: why})
	}
	if in.NAT {
		// RFC 5780 §4.5: from a different port to our own mapped address.
		ps = append(ps, Probe{ID: Hairpin, Socket: SockHairpin, To: ToSelf})
	} else {
		nr = append(nr, NotRun{Test: TestHairpinning, Reason: "no NAT: there is nothing to hairpin through"})
	}
	for i := range in.AllocSamples {
		pr := Probe{ID: AllocSample(i), Socket: fmt.Sprintf("%s%d", sockAlloc, i), To: ToPrimary}
		if i > 0 {
			pr.SentAfter = AllocSample(i - 1)
		}
		ps = append(ps, pr)
	}
	return ps, nr
}
