package natclass

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/natlab/natlab/internal/stuntx"
)

func names(ps []Probe) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.ID.String())
	}
	return out
}

func TestBuildPlan(t *testing.T) {
	tests := []struct {
		name       string
		in         PlanInput
		wantProbes []string
		wantNotRun []string
	}{
		{"rfc5780 behind NAT", PlanInput{OtherAddress: true, NAT: true, AllocSamples: 2},
			[]string{"mapping-II", "mapping-III", "filtering-I", "filtering-II", "filtering-III", "hairpin", "alloc-0", "alloc-1"}, nil},
		{"rfc5780 without NAT", PlanInput{OtherAddress: true},
			[]string{"mapping-II", "mapping-III", "filtering-I", "filtering-II", "filtering-III"}, []string{TestHairpinning}},
		{"plain STUN behind NAT", PlanInput{NAT: true, AllocSamples: 1},
			[]string{"hairpin", "alloc-0"}, []string{TestMapping, TestFiltering}},
		// Without NAT the mapping is endpoint-independent by definition;
		// only filtering needs the server's help.
		{"plain STUN without NAT", PlanInput{}, nil, []string{TestFiltering, TestHairpinning}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ps, nr := BuildPlan(tt.in)
			if got := names(ps); !slices.Equal(got, tt.wantProbes) {
				t.Errorf("probes %v, want %v", got, tt.wantProbes)
			}
			var got []string
			for _, n := range nr {
				got = append(got, n.Test)
				if n.Reason == "" {
					t.Errorf("not_run %s without a reason", n.Test)
				}
			}
			if !slices.Equal(got, tt.wantNotRun) {
				t.Errorf("not_run %v, want %v", got, tt.wantNotRun)
			}
			byID := map[ProbeID]Probe{}
			for _, p := range ps {
				byID[p.ID] = p
				if p.ID.Test() == "" {
					t.Errorf("%s belongs to no test", p.ID)
				}
			}
			for _, p := range ps {
				if p.After != noProbe {
					if _, ok := byID[p.After]; !ok {
						t.Errorf("%s runs after missing probe %s", p.ID, p.After)
					}
				}
				// The filtering socket must only ever talk to IP1:P1.
				if p.Socket == SockFiltering && p.To != ToPrimary {
					t.Errorf("%s sends from the filtering socket to %v", p.ID, p.To)
				}
			}
			if p, ok := byID[FilteringII]; ok && p.Change != stuntx.ChangeIP|stuntx.ChangePort {
				t.Errorf("filtering-II %+v", p)
			}
			if p, ok := byID[FilteringIII]; ok && p.Change != stuntx.ChangePort {
				t.Errorf("filtering-III %+v", p)
			}
			// Allocation samples leave in order, on sockets of their own.
			prev, socks := noProbe, map[string]bool{}
			for _, p := range ps {
				if p.ID.Test() == TestPortAllocation {
					if p.SentAfter != prev || socks[p.Socket] {
						t.Errorf("%s: sent after %q on %s, want after %q on a fresh socket", p.ID, p.SentAfter, p.Socket, prev)
					}
					prev, socks[p.Socket] = p.ID, true
				}
			}
		})
	}
}

func TestSchedules(t *testing.T) {
	f := firstSchedule()
	if f.sends[0] != 0 || f.sends[1] != initialRTO || f.giveUp != udpBlockedTimeout {
		t.Errorf("first schedule %+v", f)
	}
	if last := f.sends[len(f.sends)-1]; last >= udpBlockedTimeout {
		t.Errorf("last retransmission at %v, after giving up", last)
	}
	// Loopback RTTs get the floor; a slow path scales with its RTT.
	for _, tc := range []struct {
		rtt, wait time.Duration
	}{{100 * time.Microsecond, minNegativeWait}, {100 * time.Millisecond, negativeRTTs * 100 * time.Millisecond}} {
		// A probe that must be answered: RFC 5389 doubling from one wait,
		// for as long as test I may take.
		p := positiveSchedule(tc.rtt)
		if p.sends[0] != 0 || p.sends[1] != tc.wait || p.sends[2] != 3*tc.wait || p.giveUp != positiveBudget {
			t.Errorf("rtt %v: positive schedule %+v", tc.rtt, p)
		}
		// A negative one: negativeAttempts sends one wait apart, then
		// doubling; it never gives up before positiveBudget by itself.
		n := negativeSchedule(tc.rtt)
		for i := range negativeAttempts {
			if n.sends[i] != time.Duration(i)*tc.wait {
				t.Errorf("rtt %v: negative schedule %+v", tc.rtt, n)
			}
		}
		if len(n.sends) > negativeAttempts && n.sends[negativeAttempts] != negativeAttempts*tc.wait {
			t.Errorf("rtt %v: negative schedule %+v", tc.rtt, n)
		}
		for _, s := range [][]time.Duration{p.sends, n.sends} {
			if last := s[len(s)-1]; last >= positiveBudget {
				t.Errorf("rtt %v: retransmission at %v, after giving up", tc.rtt, last)
			}
		}
		if n.giveUp != positiveBudget {
			t.Errorf("rtt %v: negative give-up %v", tc.rtt, n.giveUp)
		}
	}
}

func TestMedianRTT(t *testing.T) {
	ms := func(n ...int) []time.Duration {
		var out []time.Duration
		for _, x := range n {
			out = append(out, time.Duration(x)*time.Millisecond)
		}
		return out
	}
	for _, tc := range []struct {
		in   []time.Duration
		want time.Duration
	}{
		{ms(5), 5 * time.Millisecond},
		{ms(581, 170, 171, 169), 171 * time.Millisecond}, // one slow first packet
		{ms(16, 200, 207, 193), 200 * time.Millisecond},  // loaded after test I
	} {
		if got := medianRTT(tc.in); got != tc.want {
			t.Errorf("medianRTT(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

var (
	m1  = netip.MustParseAddrPort("203.0.113.100:50000")
	m2  = netip.MustParseAddrPort("203.0.113.100:50001")
	m3  = netip.MustParseAddrPort("203.0.113.100:50002")
	ok  = func(m netip.AddrPort) probeResult { return probeResult{mapped: m} }
	tmo = probeResult{err: errTimeout}
)

func TestClassifyMapping(t *testing.T) {
	tests := []struct {
		name   string
		nat    bool
		r2, r3 probeResult
		rfc    bool
		want   Behavior
		reason bool
	}{
		{"no nat", false, tmo, tmo, false, EndpointIndependent, false},
		{"eim", true, ok(m1), ok(m2), true, EndpointIndependent, false},
		{"adm", true, ok(m2), ok(m2), true, AddressDependent, false},
		{"apdm", true, ok(m2), ok(m3), true, AddressAndPortDependent, false},
		{"test II lost", true, tmo, ok(m3), true, "", true},
		{"test III lost", true, ok(m2), tmo, true, "", true},
		{"plain stun", true, tmo, tmo, false, "", false},
	}
	for _, tt := range tests {
		got, reason := classifyMapping(tt.nat, m1, tt.r2, tt.r3, tt.rfc)
		if got != tt.want || (reason != "") != tt.reason {
			t.Errorf("%s: %q %q", tt.name, got, reason)
		}
	}
}

func TestClassifyFiltering(t *testing.T) {
	refused := probeResult{err: &ServerError{Code: 420}}
	tests := []struct {
		name       string
		r1, r2, r3 probeResult
		want       Behavior
		reason     bool
	}{
		{"eif", ok(m1), ok(m1), ok(m1), EndpointIndependent, false},
		{"eif, III cancelled", ok(m1), ok(m1), probeResult{err: errors.New("canceled")}, EndpointIndependent, false},
		{"adf", ok(m1), tmo, ok(m1), AddressDependent, false},
		{"apdf", ok(m1), tmo, tmo, AddressAndPortDependent, false},
		{"test I lost", tmo, tmo, tmo, "", true},
		{"change refused", ok(m1), refused, refused, "", true},
		{"port change refused", ok(m1), tmo, refused, "", true},
	}
	for _, tt := range tests {
		got, reason := classifyFiltering(tt.r1, tt.r2, tt.r3)
		if got != tt.want || (reason != "") != tt.reason {
			t.Errorf("%s: %q %q", tt.name, got, reason)
		}
	}
}

func TestClassifyAllocation(t *testing.T) {
	seq := func(local []uint16, mapped ...uint16) []allocSample {
		var s []allocSample
		for i, m := range mapped {
			l := uint16(1000 + i)
			if local != nil {
				l = local[i]
			}
			s = append(s, allocSample{local: l, mapped: m})
		}
		return s
	}
	tests := []struct {
		name    string
		samples []allocSample
		want    Allocation
		step    int
	}{
		{"preserving", seq([]uint16{4000, 4100, 4200, 4300}, 4000, 4100, 4200, 4300), Preserving, 0},
		{"preserving with one collision", seq([]uint16{4000, 4100, 4200, 4300}, 4000, 4100, 9999, 4300), Preserving, 0},
		{"sequential", seq(nil, 500, 501, 502, 503, 504, 505, 506, 507), Sequential, 1},
		{"sequential step 2", seq(nil, 500, 502, 504, 506, 508), Sequential, 2},
		{"sequential, reordered", seq(nil, 500, 501, 503, 502, 504, 505), Sequential, 1},
		{"sequential with foreign mappings", seq(nil, 500, 501, 503, 504, 505, 507, 508, 509), Sequential, 1},
		{"descending", seq(nil, 900, 899, 898, 897, 896), Sequential, -1},
		{"random", seq(nil, 31000, 52011, 40222, 1033, 61999, 24010, 9000, 47000), Random, 0},
	}
	for _, tt := range tests {
		pa, reason := classifyAllocation(tt.samples)
		if pa == nil {
			t.Errorf("%s: nil (%s)", tt.name, reason)
			continue
		}
		if pa.Pattern != tt.want || pa.Step != tt.step || len(pa.Samples) != len(tt.samples) {
			t.Errorf("%s: %+v, want %s step %d", tt.name, pa, tt.want, tt.step)
		}
	}
	if pa, reason := classifyAllocation(seq(nil, 1, 2)); pa != nil || reason == "" {
		t.Errorf("two samples: %+v %q", pa, reason)
	}
}

func TestMappingAcrossServers(t *testing.T) {
	prim := netip.MustParseAddrPort("198.51.100.1:3478")
	otherIP := netip.MustParseAddrPort("198.51.100.2:3478")
	otherPort := netip.MustParseAddrPort("198.51.100.1:3479")
	tests := []struct {
		name      string
		others    []serverMapping
		want      Behavior
		dependent bool
	}{
		{"none", nil, "", false},
		{"same mapping elsewhere", []serverMapping{{otherIP, m1}}, EndpointIndependent, false},
		{"differs by ip only known", []serverMapping{{otherIP, m2}}, "", true},
		{"differs by ip, same by port", []serverMapping{{otherIP, m2}, {otherPort, m1}}, AddressDependent, true},
		{"differs by port", []serverMapping{{otherIP, m2}, {otherPort, m3}}, AddressAndPortDependent, true},
		{"same server twice", []serverMapping{{prim, m1}}, "", false},
	}
	for _, tt := range tests {
		got, dep := mappingAcrossServers(prim, m1, tt.others)
		if got != tt.want || dep != tt.dependent {
			t.Errorf("%s: %q %v, want %q %v", tt.name, got, dep, tt.want, tt.dependent)
		}
	}
}

// TestPlanResults: every probe of the largest plan has a slot of its own,
// and a probe the plan lacks has none.
func TestPlanResults(t *testing.T) {
	plan, _ := BuildPlan(PlanInput{OtherAddress: true, NAT: true, AllocSamples: 3})
	res := newPlanResults(plan)
	seen := map[*probeResult]ProbeID{}
	for _, p := range plan {
		s := res.slot(p.ID)
		if s == nil {
			t.Fatalf("%s has no slot", p.ID)
		}
		if other, dup := seen[s]; dup {
			t.Errorf("%s and %s share a slot", p.ID, other)
		}
		seen[s] = p.ID
		res.set(p.ID, probeResult{local: netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(p.ID))})
	}
	for _, p := range plan {
		if got := res.get(p.ID); got.local.Port() != uint16(p.ID) {
			t.Errorf("%s reads back %v", p.ID, got)
		}
	}
	if len(res.alloc) != 3 || res.hairpin == nil {
		t.Errorf("alloc %d, hairpin %v", len(res.alloc), res.hairpin)
	}
	noNAT, _ := BuildPlan(PlanInput{OtherAddress: true})
	if r := newPlanResults(noNAT); r.slot(Hairpin) != nil || r.slot(AllocSample(0)) != nil {
		t.Error("a plan without hairpin or samples has slots for them")
	}
	if AllocSample(2).String() != "alloc-2" || FilteringII.String() != "filtering-II" || Hairpin.Test() != TestHairpinning {
		t.Error("probe names")
	}
}

func TestLifetimeGrid(t *testing.T) {
	g := lifetimeGrid(time.Second, 2*time.Minute)
	if len(g) > 70 || g[0] != time.Second || g[len(g)-1] != 2*time.Minute {
		t.Fatalf("grid %v: want about 60 times from 1s to 2m", g)
	}
	for i := 1; i < len(g); i++ {
		gap := g[i] - g[i-1]
		// Ending at the first dead mapping costs at most one gap past
		// the lifetime: a second, or 5% of it.
		if gap <= 0 || (gap > time.Second && float64(gap) > 0.051*float64(g[i-1])) {
			t.Errorf("gap %v after %v", gap, g[i-1])
		}
	}
}
