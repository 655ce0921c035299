package fleet

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/natlab/natlab/internal/leakcheck"
	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/probe"
)

// summaries covers every kind of predictor input the lab produces; TCP
// profiles as Linux NATs give them (TCP like UDP).
var summaries = func() map[string]natclass.Summary {
	ei, apd := natclass.EndpointIndependent, natclass.AddressAndPortDependent
	m := map[string]natclass.Summary{
		"open":          {NATType: natclass.Open, Mapping: ei, Filtering: ei, Allocation: natclass.Preserving},
		"full-cone":     {NATType: natclass.FullCone, Mapping: ei, Filtering: ei, Allocation: natclass.Preserving},
		"prc":           {NATType: natclass.PortRestrictedCone, Mapping: ei, Filtering: apd, Allocation: natclass.Preserving},
		"sym":           {NATType: natclass.Symmetric, Mapping: apd, Filtering: apd, Allocation: natclass.Random},
		"sym-seq":       {NATType: natclass.Symmetric, Mapping: apd, Filtering: apd, Allocation: natclass.Sequential, Step: 1},
		"sym-upnp":      {NATType: natclass.Symmetric, Mapping: apd, Filtering: apd, Allocation: natclass.Random, PortMapping: true},
		"blocked":       {NATType: natclass.UDPBlocked},
		"blocked-notcp": {NATType: natclass.UDPBlocked},
	}
	for k, s := range m {
		s.TCP = true
		t := &natclass.TCPSummary{Reached: natclass.Yes, Mapping: s.Mapping, Filtering: s.Filtering, Allocation: s.Allocation}
		switch k {
		case "blocked":
			t.Mapping, t.Filtering, t.Allocation = ei, apd, natclass.Preserving
		case "blocked-notcp":
			t = &natclass.TCPSummary{Reached: natclass.No}
		}
		s.TCPProfile = t
		m[k] = s
	}
	return m
}()

func mustAdd(t testing.TB, f *Fleet, h Host) {
	t.Helper()
	if err := f.Add(h); err != nil {
		t.Fatal(err)
	}
}

func TestReportSmallFleet(t *testing.T) {
	f := New()
	// Two port-restricted cones and two symmetric NATs: the cones punch,
	// each cone birthday-probes a symmetric NAT, and the two symmetric
	// NATs need the relay.
	for i, k := range []string{"prc", "prc", "sym", "sym"} {
		s := summaries[k]
		// Public addresses are per host: ignored (no same-lan across a
		// fleet), so they do not split a class.
		s.Mapped = fmt.Sprintf("198.51.100.%d:1000", i)
		tcp := *s.TCPProfile
		tcp.Mapped = fmt.Sprintf("198.51.100.%d:2000", i)
		s.TCPProfile = &tcp
		mustAdd(t, f, Host{Summary: s})
	}
	r := f.Report(Options{TrafficBps: 1e6})
	if r.Hosts != 4 || r.Pairs != 6 || r.Classes != 2 {
		t.Fatalf("hosts %d pairs %d classes %d, want 4 6 2", r.Hosts, r.Pairs, r.Classes)
	}
	want := map[string]float64{"udp": 1.0 / 6, "udp-birthday": 4.0 / 6, "relay-udp": 1.0 / 6}
	if !sameShares(r.Techniques, want) {
		t.Errorf("techniques %v, want %v", r.Techniques, want)
	}
	if !near(r.DirectShare, 5.0/6) || !near(r.RelayShare, 1.0/6) || !near(r.Relay.UDP, 1.0/6) {
		t.Errorf("direct %v relay %v (%+v)", r.DirectShare, r.RelayShare, r.Relay)
	}
	if !near(r.RelayBandwidthBps, 1e6) {
		t.Errorf("relay bandwidth %v, want one relayed pair at 1 Mbit/s", r.RelayBandwidthBps)
	}
	if len(r.ByNATType) != 2 || r.ByNATType[0].NATType != natclass.Symmetric || !near(r.ByNATType[0].ShareOfRelay, 1) || r.ByNATType[1].ShareOfRelay != 0 {
		t.Errorf("by NAT type %+v: symmetric should carry all the relay share", r.ByNATType)
	}
	if r.Keepalive != nil {
		t.Errorf("keepalive %+v without lifetimes", r.Keepalive)
	}
}

func TestReportWeightsAndKeepalive(t *testing.T) {
	f := New()
	// A full cone with 3 users and a 30 s lifetime, a port-restricted
	// cone with 1 user and 10 s: one pair of weight 3, direct over UDP.
	// Keepalives every 24 s and 8 s: 150 + 450 packets an hour.
	mustAdd(t, f, Host{Summary: summaries["full-cone"], Weight: 3, LifetimeS: 30})
	mustAdd(t, f, Host{Summary: summaries["prc"], LifetimeS: 10})
	r := f.Report(Options{})
	if r.Weight != 4 || !near(r.DirectShare, 1) || r.Keepalive == nil {
		t.Fatalf("report %+v", r)
	}
	if !near(r.Keepalive.PacketsPerHour, 3*600) || !near(r.Keepalive.PacketsPerHourPerPair, 600) || !near(r.Keepalive.PairShare, 1) {
		t.Errorf("keepalive %+v, want 600 packets/h per pair, weight 3", r.Keepalive)
	}
	if err := New().Add(Host{Summary: summaries["prc"], Weight: -1}); err == nil {
		t.Error("negative weight accepted")
	}
}

func TestRelayTCPAndNoPath(t *testing.T) {
	unmeasured := summaries["blocked"]
	unmeasured.TCPProfile = nil
	summaries["blocked-unmeasured"] = unmeasured
	defer delete(summaries, "blocked-unmeasured")
	for _, tc := range []struct {
		a, b, want string
	}{
		{"sym", "blocked", string(natclass.RelayTCP)},
		{"prc", "blocked", string(natclass.DirectTCP)},
		{"sym", "blocked-notcp", NoPath},
		{"sym", "blocked-unmeasured", Unknown},
		{"sym", "sym-upnp", string(natclass.MappedUDP)},
		{"sym-seq", "prc", string(natclass.PredictUDP)},
	} {
		if got := Best(summaries[tc.a], summaries[tc.b]); got != tc.want {
			t.Errorf("%s × %s: %s, want %s", tc.a, tc.b, got, tc.want)
		}
	}
}

// TestClassesEqualEveryPair checks the class arithmetic against the
// predictor run on every pair of hosts.
func TestClassesEqualEveryPair(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	keys := []string{"open", "full-cone", "prc", "sym", "sym-seq", "sym-upnp", "blocked", "blocked-notcp"}
	var hosts []Host
	f := New()
	for range 300 {
		h := Host{Summary: summaries[keys[rng.IntN(len(keys))]], Weight: float64(1 + rng.IntN(5))}
		if rng.IntN(2) == 0 {
			h.LifetimeS = float64(5 + rng.IntN(120))
		}
		hosts = append(hosts, h)
		mustAdd(t, f, h)
	}
	r := f.Report(Options{})
	tech := map[string]float64{}
	var total, kaMass, kaPackets float64
	for i := range hosts {
		for j := i + 1; j < len(hosts); j++ {
			a, b := hosts[i], hosts[j]
			m := a.Weight * b.Weight
			best := Best(a.Summary, b.Summary)
			tech[best] += m
			total += m
			ka, oka := keepalivePerHour(a.Summary, a.LifetimeS)
			kb, okb := keepalivePerHour(b.Summary, b.LifetimeS)
			if probe.KeptAlive(natclass.Technique(best)) && oka && okb {
				kaMass += m
				kaPackets += m * (ka + kb)
			}
		}
	}
	for k := range tech {
		tech[k] /= total
	}
	if !sameShares(r.Techniques, tech) {
		t.Errorf("classes say %v\nevery pair says %v", r.Techniques, tech)
	}
	if r.Keepalive == nil || !near(r.Keepalive.PacketsPerHour, kaPackets) || !near(r.Keepalive.PacketsPerHourPerPair, kaPackets/kaMass) {
		t.Errorf("keepalive %+v, every pair says %v packets/h over mass %v", r.Keepalive, kaPackets, kaMass)
	}
	if r.Classes != len(keys) {
		t.Errorf("%d classes, want %d", r.Classes, len(keys))
	}
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }

func sameShares(a, b map[string]float64) bool {
	for k, v := range a {
		if !near(v, b[k]) {
			return false
		}
	}
	for k, v := range b {
		if !near(v, a[k]) {
			return false
		}
	}
	return true
}

func TestDecodeBadInput(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "no documents"},
		{"{", "unexpected EOF"},
		{`{"schema":"natlab.lab/v1"}`, `schema "natlab.lab/v1"`},
		{`{"profile":{}}`, `no "schema"`},
		{`{"schema":"natlab.check/v1"}`, "without a profile"},
		{`{"schema":"natlab.check/v1","profile":{"nat_type":"open"},"weight":0}`, "weight 0"},
		{`[1,2]`, "cannot unmarshal"},
	} {
		err := Decode(strings.NewReader(tc.in), "in", func(Host) error { return nil })
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one containing %q", tc.in, err, tc.want)
		}
	}
}

func TestParseRate(t *testing.T) {
	for in, want := range map[string]float64{"64k": 64e3, "1.5M": 1.5e6, "2Mbit/s": 2e6, "800000": 8e5, "1Gbps": 1e9} {
		if got, err := ParseRate(in); err != nil || got != want {
			t.Errorf("%q: %v %v, want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "fast", "-1M", "0", "1T"} {
		if _, err := ParseRate(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}

// TestLoadPaths reads a directory (recursively, only document files), a
// file and stdin, with documents from the example fleet.
func TestLoadPaths(t *testing.T) {
	lines, err := os.ReadFile(filepath.Join("..", "examples", "fleet", "hosts.jsonl"))
	if err != nil {
		t.Skipf("no example fleet: %v", err)
	}
	docs := strings.SplitN(string(lines), "\n", 5)[:4]
	dir := t.TempDir()
	write := func(name, body string) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("a.json", docs[0])
	write("sub/b.jsonl", docs[1]+"\n"+docs[2]+"\n")
	write("notes.txt", "not a profile")
	f := New()
	if err := Load(context.Background(), []string{dir, "-"}, strings.NewReader(docs[3]), f.Add); err != nil {
		t.Fatal(err)
	}
	if f.Hosts() != 4 {
		t.Errorf("%d hosts, want 4 (a.json, two lines of sub/b.jsonl, stdin; notes.txt skipped)", f.Hosts())
	}
	// A file given by name is read whatever its extension.
	err = Load(context.Background(), []string{filepath.Join(dir, "notes.txt")}, nil, New().Add)
	if err == nil || !strings.Contains(err.Error(), "notes.txt: document 1") {
		t.Errorf("a named non-JSON file: %v", err)
	}
}

// TestDecodeOrderAndErrors: documents decoded on several goroutines are
// added in their order; an error names its document, later batches stop,
// and no goroutine is left behind.
func TestDecodeOrderAndErrors(t *testing.T) {
	leakcheck.Check(t)
	lines, err := os.ReadFile(filepath.Join("..", "examples", "fleet", "hosts.jsonl"))
	if err != nil {
		t.Skipf("no example fleet: %v", err)
	}
	doc := strings.SplitN(string(lines), "\n", 2)[0]
	var in strings.Builder
	const n, bad = 2000, 1300
	for i := 1; i <= n; i++ {
		w := i
		if i == bad {
			w = -1
		}
		in.WriteString(strings.Replace(doc, `"schema"`, fmt.Sprintf(`"weight":%d,"schema"`, w), 1) + "\n")
	}
	var got []float64
	err = Decode(strings.NewReader(in.String()), "in", func(h Host) error {
		got = append(got, h.Weight)
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("in: document %d: weight -1", bad)) {
		t.Fatalf("error %v, want one naming document %d", err, bad)
	}
	if len(got) != bad-1 {
		t.Fatalf("%d hosts added before the bad document, want %d", len(got), bad-1)
	}
	for i, w := range got {
		if w != float64(i+1) {
			t.Fatalf("host %d has weight %v: out of order", i+1, w)
		}
	}
	// A syntax error after whole batches names its document too.
	trunc := in.String()[:strings.Index(in.String(), fmt.Sprintf(`"weight":%d,`, 600))+5]
	if err := Decode(strings.NewReader(trunc), "in", func(Host) error { return nil }); err == nil || !strings.Contains(err.Error(), "document 600") {
		t.Errorf("truncated input: %v", err)
	}
}
