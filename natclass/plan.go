package natclass

import "fmt"

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

// Probe is one Binding request of the plan.
type Probe struct {
	// Name identifies the probe ("filtering-II"); After refers to it.
	Name string
	// Test is the RFC 5780 test the probe belongs to.
	Test string
	// Socket is the local socket it is sent from.
	Socket string
	// To is where it is sent.
	To Target
	// Change holds CHANGE-REQUEST flags (0x04 change IP, 0x02 change port).
	Change uint32
	// After names a probe that must have completed first.
	After string
	// SentAfter names a probe whose first transmission must precede this
	// one's: the NAT then allocates the port allocation samples in order.
	SentAfter string
	// Negative means silence is an answer (filtering, hairpin): the wait
	// is derived from the measured RTT instead of the give-up timeout.
	Negative bool
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

// CHANGE-REQUEST flags (RFC 5780 §7.2).
const (
	ChangeIP   uint32 = 0x04
	ChangePort uint32 = 0x02
)

// BuildPlan returns the second round of probes, after test I, and the
// tests it cannot run. It is a pure function of its input.
func BuildPlan(in PlanInput) ([]Probe, []NotRun) {
	var ps []Probe
	var nr []NotRun
	if in.OtherAddress {
		ps = append(ps,
			// RFC 5780 §4.3: test II to IP2:P1, test III to IP2:P2,
			// from the socket whose test I mapping we know.
			Probe{Name: "mapping-II", Test: TestMapping, Socket: SockMapping, To: ToAltIP},
			Probe{Name: "mapping-III", Test: TestMapping, Socket: SockMapping, To: ToOther},
			// RFC 5780 §4.4 on a socket that has only talked to IP1:P1.
			Probe{Name: "filtering-I", Test: TestFiltering, Socket: SockFiltering, To: ToPrimary},
			Probe{Name: "filtering-II", Test: TestFiltering, Socket: SockFiltering, To: ToPrimary,
				Change: ChangeIP | ChangePort, After: "filtering-I", Negative: true},
			Probe{Name: "filtering-III", Test: TestFiltering, Socket: SockFiltering, To: ToPrimary,
				Change: ChangePort, After: "filtering-I", Negative: true},
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
		ps = append(ps, Probe{Name: "hairpin", Test: TestHairpinning, Socket: SockHairpin, To: ToSelf, Negative: true})
	} else {
		nr = append(nr, NotRun{Test: TestHairpinning, Reason: "no NAT: there is nothing to hairpin through"})
	}
	for i := range in.AllocSamples {
		pr := Probe{Name: fmt.Sprintf("alloc-%d", i), Test: TestPortAllocation, Socket: fmt.Sprintf("%s%d", sockAlloc, i), To: ToPrimary}
		if i > 0 {
			pr.SentAfter = fmt.Sprintf("alloc-%d", i-1)
		}
		ps = append(ps, pr)
	}
	return ps, nr
}
