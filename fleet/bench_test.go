package fleet

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/natlab/natlab/natclass"
)

// benchHosts is a population of n hosts over every kind of predictor
// input, with weights and lifetimes.
func benchHosts(n int) []Host {
	rng := rand.New(rand.NewPCG(3, 4))
	keys := []string{"open", "full-cone", "prc", "sym", "sym-seq", "sym-upnp", "blocked", "blocked-notcp"}
	hs := make([]Host, n)
	for i := range hs {
		s := summaries[keys[rng.IntN(len(keys))]]
		s.Mapped = fmt.Sprintf("198.51.%d.%d:%d", i>>8&255, i&255, 1024+rng.IntN(60000))
		if s.TCPProfile != nil {
			// Every host has its own TCP public address too.
			t := *s.TCPProfile
			t.Mapped = fmt.Sprintf("198.51.%d.%d:%d", i>>8&255, i&255, 1024+rng.IntN(60000))
			s.TCPProfile = &t
		}
		if s.Allocation == natclass.Sequential {
			s.Step = 1 + rng.IntN(3)
		}
		hs[i] = Host{Summary: s, Weight: float64(1 + rng.IntN(10)), LifetimeS: float64(rng.IntN(4) * 30)}
	}
	return hs
}

// BenchmarkFleet100k adds 100k hosts and reports on every pair of them
// (5·10⁹ pairs, through their classes).
func BenchmarkFleet100k(b *testing.B) {
	hs := benchHosts(100_000)
	b.ReportAllocs()
	for b.Loop() {
		f := New()
		for _, h := range hs {
			if err := f.Add(h); err != nil {
				b.Fatal(err)
			}
		}
		r := f.Report(Options{TrafficBps: 1e6})
		if r.Pairs != 100_000*99_999/2 {
			b.Fatal(r.Pairs)
		}
	}
}

// BenchmarkDecode100k reads 100k check documents as JSON lines: the
// profiles' parse, the larger part of a real run.
func BenchmarkDecode100k(b *testing.B) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for i, h := range benchHosts(100_000) {
		s := h.Summary
		p := natclass.Profile{NATType: s.NATType, Mapping: s.Mapping, Filtering: s.Filtering, MappedAddress: s.Mapped,
			LocalAddress: fmt.Sprintf("10.0.0.2:%d", 1024+i%60000), Server: "203.0.113.10:3478", RTTMillis: 20,
			PortAllocation: &natclass.PortAllocation{Pattern: s.Allocation, Step: s.Step, Samples: []int{1, 2, 3, 4, 5, 6, 7, 8}}}
		if err := enc.Encode(map[string]any{"schema": checkSchema, "profile": p, "weight": h.Weight}); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(buf.Len()))
	b.ReportAllocs()
	for b.Loop() {
		f := New()
		if err := Decode(bytes.NewReader(buf.Bytes()), "bench", f.Add); err != nil {
			b.Fatal(err)
		}
		if f.Hosts() != 100_000 {
			b.Fatal(f.Hosts())
		}
	}
}
