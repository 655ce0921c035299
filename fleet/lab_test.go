package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/natlab/natlab/lab"
	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/testnet"
)

// labSites is how many sites one lab holds (testnet's limit).
const labSites = 8

// checkDoc is a `natlab check --json` document as a fleet reads it.
type checkDoc struct {
	Schema      string            `json:"schema"`
	Profile     *natclass.Profile `json:"profile"`
	PortMapping any               `json:"port_mapping"`
	TCP         *bool             `json:"tcp,omitempty"`
	Weight      float64           `json:"weight,omitempty"`
}

// labProfiles profiles one lab host behind each preset (in labs of up to
// eight sites, up to eight labs at once) and returns their check
// documents, in order. In-process hosts have no TCP, and their documents
// say so. With lifetime, each host also measures its binding lifetimes.
func labProfiles(ctx context.Context, t testing.TB, backend testnet.Backend, presets []string, lifetime bool) []checkDoc {
	t.Helper()
	docs := make([]checkDoc, len(presets))
	errs := make([]error, len(presets))
	// Lifetimes open ~120 mappings per host at once: fewer labs at a time.
	sem := make(chan struct{}, 8)
	if lifetime {
		sem = make(chan struct{}, 5)
	}
	var wg sync.WaitGroup
	for lo := 0; lo < len(presets); lo += labSites {
		chunk := presets[lo:min(lo+labSites, len(presets))]
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			// A profile can come out incomplete on a loaded machine (its
			// negative tests wait a few RTTs): measure the lab again, as a
			// user would re-run a check, at most twice.
			for try := 0; try < 3; try++ {
				if errs[lo] = labChunk(ctx, backend, chunk, lifetime, docs[lo:lo+len(chunk)]); errs[lo] == nil {
					break
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return docs
}

// labChunk profiles the hosts of one lab into docs.
func labChunk(ctx context.Context, backend testnet.Backend, presets []string, lifetime bool, docs []checkDoc) error {
	var topo testnet.Topology
	for i, p := range presets {
		n, err := testnet.Preset(p)
		if err != nil {
			return err
		}
		topo.Sites = append(topo.Sites, testnet.SiteSpec{Name: fmt.Sprintf("s%d", i), Preset: p, NAT: n})
	}
	rep, err := lab.Run(ctx, lab.Options{Backend: backend, Topology: topo, Lifetime: lifetime})
	if err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	for i, s := range rep.Sites {
		if s.Profile == nil || len(s.Mismatches) > 0 {
			return fmt.Errorf("site %s (%s): profile %v, mismatches %v, error %q", s.Name, s.Preset, s.Profile != nil, s.Mismatches, s.Error)
		}
		docs[i] = checkDoc{Schema: checkSchema, Profile: s.Profile}
		if backend == testnet.InProcess {
			docs[i].TCP = new(bool)
		}
	}
	return nil
}

func jsonLines(t testing.TB, docs []checkDoc) []byte {
	t.Helper()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	for _, d := range docs {
		if err := enc.Encode(d); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

// TestFleetMatchesMatrix profiles two lab hosts behind each preset, runs
// the fleet on their documents, and compares it with the matrix measured
// for the same presets: the fleet's technique shares must be the ones
// the measured verdicts give, pair by pair.
func TestFleetMatchesMatrix(t *testing.T) {
	presets := []string{"full-cone", "port-restricted-cone", "symmetric", "symmetric-sequential", "carrier"}
	compareWithMatrix(t, testnet.InProcess, presets)
}

// TestFleetMatchesMatrixKernel does the same with real Linux NAT, where
// TCP and the relay over TCP take part.
func TestFleetMatchesMatrixKernel(t *testing.T) {
	if testing.Short() {
		t.Skip("builds network namespaces")
	}
	if runtime.GOOS != "linux" {
		t.Skip("the kernel lab needs Linux")
	}
	if os.Geteuid() != 0 {
		t.Skip("the kernel lab needs root or CAP_NET_ADMIN")
	}
	compareWithMatrix(t, testnet.Kernel, []string{"port-restricted-cone", "symmetric", "udp-blocked", "carrier"})
}

func compareWithMatrix(t *testing.T, backend testnet.Backend, presets []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var hosts []string
	for _, p := range presets {
		hosts = append(hosts, p, p)
	}
	docs := labProfiles(ctx, t, backend, hosts, false)
	m, err := lab.RunMatrix(ctx, lab.MatrixOptions{Backend: backend, Presets: presets})
	if err != nil {
		t.Fatalf("matrix: %v", err)
	}
	measured := func(a, b string) string {
		c := m.Cell(a, b)
		if c == nil || c.Error != "" {
			t.Fatalf("matrix has no result for %s × %s: %+v", a, b, c)
		}
		if c.Best() == "" {
			return NoPath
		}
		return string(c.Best())
	}
	// Pair by pair: a fleet of the two hosts predicts the measured verdict.
	for i := range presets {
		for j := i; j < len(presets); j++ {
			pair := []checkDoc{docs[2*i], docs[2*j+1]}
			f := New()
			if err := Decode(bytes.NewReader(jsonLines(t, pair)), "pair", f.Add); err != nil {
				t.Fatal(err)
			}
			r := f.Report(Options{})
			want := measured(presets[i], presets[j])
			if r.Techniques[want] != 1 {
				t.Errorf("%s × %s: fleet predicts %v, the lab measured %s", presets[i], presets[j], r.Techniques, want)
			}
		}
	}
	// The whole fleet: shares weighted as the matrix's pairs occur in it.
	f := New()
	if err := Decode(bytes.NewReader(jsonLines(t, docs)), "fleet", f.Add); err != nil {
		t.Fatal(err)
	}
	r := f.Report(Options{})
	want := map[string]float64{}
	n := float64(len(docs) * (len(docs) - 1) / 2)
	for i := range presets {
		for j := i; j < len(presets); j++ {
			w := 4.0 // two hosts each side
			if i == j {
				w = 1
			}
			want[measured(presets[i], presets[j])] += w / n
		}
	}
	if !sameShares(r.Techniques, want) {
		t.Errorf("fleet: %v\nmatrix: %v", r.Techniques, want)
	}
	t.Logf("%s: %d hosts, %d pairs: fleet and matrix agree on every pair (direct %.1f%%)", backend, r.Hosts, r.Pairs, 100*r.DirectShare)
}

// TestWriteExample regenerates examples/fleet from kernel-lab hosts when
// NATLAB_FLEET_EXAMPLE names the output file (README's worked example).
func TestWriteExample(t *testing.T) {
	out := os.Getenv("NATLAB_FLEET_EXAMPLE")
	if out == "" {
		t.Skip("set NATLAB_FLEET_EXAMPLE=path/to/hosts.jsonl to regenerate the example fleet")
	}
	backend := testnet.Kernel
	if os.Getenv("NATLAB_FLEET_EXAMPLE_BACKEND") == string(testnet.InProcess) {
		backend = testnet.InProcess
	}
	// A population where a fifth of the hosts sit behind a carrier's
	// CGNAT, the rest behind home routers and a few strict networks.
	mix := []struct {
		preset string
		hosts  int
	}{
		{"port-restricted-cone", 96}, {"carrier", 60}, {"full-cone", 24}, {"restricted-cone", 24},
		{"double-nat", 30}, {"symmetric", 24}, {"symmetric-sequential", 12}, {"open", 15}, {"udp-blocked", 15},
	}
	var presets []string
	for _, m := range mix {
		for range m.hosts {
			presets = append(presets, m.preset)
		}
	}
	docs := labProfiles(context.Background(), t, backend, presets, os.Getenv("NATLAB_FLEET_EXAMPLE_LIFETIME") != "")
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, jsonLines(t, docs), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d profiles written to %s", len(docs), out)
}
