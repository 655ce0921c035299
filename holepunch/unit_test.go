package holepunch

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/natlab/natlab/natclass"
)

func TestScheduleTimes(t *testing.T) {
	ms := time.Millisecond
	got := Schedule{Burst: 3, BurstGap: 10 * ms, First: 50 * ms, Max: 200 * ms, Backoff: 2, Total: 800 * ms}.Times()
	want := []time.Duration{0, 10 * ms, 20 * ms, 70 * ms, 170 * ms, 370 * ms, 570 * ms, 770 * ms}
	if !slices.Equal(got, want) {
		t.Errorf("times %v, want %v", got, want)
	}
	got = Schedule{Burst: 1, First: 50 * ms, Backoff: 1, Total: 200 * ms, Opening: 120 * ms}.Times()
	want = []time.Duration{0, 50 * ms, 100 * ms, 120 * ms, 150 * ms}
	if !slices.Equal(got, want) {
		t.Errorf("with opening: %v, want %v", got, want)
	}
	def := DefaultSchedule().Times()
	if def[0] != 0 || def[len(def)-1] >= DefaultPunchTimeout {
		t.Errorf("default schedule %v leaves [0, %v)", def, DefaultPunchTimeout)
	}
	if !slices.IsSorted(def) || len(def) > 50 {
		t.Errorf("default schedule unsorted or unbounded: %d sends", len(def))
	}
	for i := 1; i < len(def); i++ {
		if gap := def[i] - def[i-1]; gap > defaultMaxInterval {
			t.Errorf("gap %v at %d exceeds the cap", gap, i)
		}
	}
}

func TestWireRoundTrip(t *testing.T) {
	s, err := NewSession()
	if err != nil {
		t.Fatal(err)
	}
	obs := netip.MustParseAddrPort("198.51.100.7:4242")
	p := probe{typ: msgPong, confirmed: true, side: SideA, nonce: newNonce(), observed: obs}
	b := s.marshal(nil, p)
	if len(b) != probeSize {
		t.Fatalf("size %d, want %d", len(b), probeSize)
	}
	got, err := s.Peer().unmarshal(b)
	if err != nil || got != p {
		t.Fatalf("round trip: %+v, %v; want %+v", got, err, p)
	}
	// Any flipped bit is refused.
	for i := range b {
		c := bytes.Clone(b)
		c[i] ^= 0x40
		if _, err := s.unmarshal(c); err == nil {
			t.Errorf("byte %d flipped: accepted", i)
		}
	}
	// Another session's key does not verify.
	other := s
	other.Key[0] ^= 1
	if _, err := other.unmarshal(b); err != errBadMAC {
		t.Errorf("other key: %v, want %v", err, errBadMAC)
	}
	if _, err := s.unmarshal([]byte("hello")); err != errNotProbe {
		t.Errorf("junk: %v", err)
	}
}

func TestPredictPorts(t *testing.T) {
	last := netip.MustParseAddrPort("198.51.100.10:20010")
	got := PredictPorts(last, 2, 3)
	want := []uint16{20012, 20014, 20016}
	for i, c := range got {
		if c.Kind != Predicted || c.Addr.Addr() != last.Addr() || c.Addr.Port() != want[i] {
			t.Errorf("prediction %d: %v, want port %d", i, c, want[i])
		}
	}
	if n := len(PredictPorts(last, 1, 1000)); n != MaxPredicted {
		t.Errorf("%d predictions, want the bound %d", n, MaxPredicted)
	}
	wrap := PredictPorts(netip.MustParseAddrPort("1.2.3.4:65535"), 1, 2)
	if wrap[0].Addr.Port() != 1024 || wrap[1].Addr.Port() != 1025 {
		t.Errorf("wrap: %v", wrap)
	}
	down := PredictPorts(netip.MustParseAddrPort("1.2.3.4:1025"), -1, 2)
	if down[0].Addr.Port() != 1024 || down[1].Addr.Port() != 65535 {
		t.Errorf("negative step: %v", down)
	}
}

func TestOrderCandidates(t *testing.T) {
	pub := netip.MustParseAddrPort("198.51.100.10:1000")
	got := orderCandidates([]Candidate{
		{Srflx, pub}, {Predicted, netip.MustParseAddrPort("198.51.100.10:1001")},
		{Host, netip.MustParseAddrPort("10.0.0.2:1000")}, {Host, pub}, {Srflx, pub},
	})
	var kinds []string
	for _, p := range got {
		kinds = append(kinds, string(p.kind)+" "+p.remote.String())
	}
	want := "host 10.0.0.2:1000,srflx 198.51.100.10:1000,predicted 198.51.100.10:1001"
	if strings.Join(kinds, ",") != want {
		t.Errorf("order %v, want %v", kinds, want)
	}
}

func TestResultJSON(t *testing.T) {
	r := Result{Technique: natclass.DirectUDP, Success: true, Attempts: 4, RTT: 1500 * time.Microsecond,
		Remote: netip.MustParseAddrPort("198.51.100.11:5000")}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"technique":"udp"`, `"rtt_ms":1.5`, `"remote":"198.51.100.11:5000"`, `"attempts":4`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("%s lacks %s", b, want)
		}
	}
}

// TestHeldPlan: a held plan sends the same steps, each later by the hold.
func TestHeldPlan(t *testing.T) {
	base := func(i int) (step, bool) { return step{at: time.Duration(i) * time.Millisecond, lowTTL: i == 0}, i < 3 }
	for _, d := range []time.Duration{0, 75 * time.Millisecond} {
		pl := held(base, d)
		for i := range 4 {
			got, ok := pl(i)
			want, wok := base(i)
			if ok != wok || got.at != want.at+d || got.lowTTL != want.lowTTL {
				t.Errorf("hold %v, step %d: %+v %v, want at %v", d, i, got, ok, want.at+d)
			}
		}
	}
}
