package lab

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/natlab/natlab/internal/buildinfo"
	"github.com/natlab/natlab/internal/millis"
	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/probe"
	"github.com/natlab/natlab/rendezvous"
	"github.com/natlab/natlab/testnet"
)

// MatrixSchema versions the JSON document of `natlab lab --matrix`.
const MatrixSchema = "natlab.matrix/v1"

// matrixParallel is how many preset pairs run at once: each pair is a few
// sockets and goroutines in-process, a handful of namespaces on the
// kernel (where a pair mostly waits out timeouts: three at once keep a
// 78-pair kernel matrix near two and a half minutes on two cores); more
// than this only contends for the machine's cores and skews the timings
// (profiles left incomplete under load).
var matrixParallel = map[testnet.Backend]int{testnet.InProcess: 4, testnet.Kernel: 3}

// MatrixOptions configure RunMatrix.
type MatrixOptions struct {
	Backend testnet.Backend
	// Segment joins each pair's routers: testnet.Routed ("") or Shared.
	Segment testnet.Segment
	// Presets to pair (every unordered pair, each with itself too);
	// testnet.Presets() when empty.
	Presets []string
	// Events, if set, receives the MatrixPlan first, then one event per
	// finished pair (Data *MatrixPair); calls do not overlap.
	Events func(probe.Event)
	Logger *slog.Logger
}

// MatrixReport is the P2P feasibility matrix of the lab.
type MatrixReport struct {
	Schema        string `json:"schema"`         // MatrixSchema
	NatlabVersion string `json:"natlab_version"` // the build that wrote it
	Backend       string `json:"backend"`        // in-process or kernel
	// Topology is what joins the routers: "routed" or "shared".
	Topology string   `json:"topology,omitempty"`
	Presets  []string `json:"presets"` // rows and columns
	// Excluded names presets this backend cannot pair, with why.
	Excluded       map[string]string `json:"excluded,omitempty"`
	Pairs          []MatrixPair      `json:"pairs"`       // one per unordered pair
	Match          bool              `json:"match"`       // every measured outcome equals its prediction
	DurationMillis float64           `json:"duration_ms"` // wall time
}

// MatrixPair is one cell: preset A × preset B.
type MatrixPair struct {
	A          string                  `json:"a"`
	B          string                  `json:"b"`
	Techniques []probe.TechniqueResult `json:"techniques,omitempty"` // side A's view, agreed with B
	Relay      *probe.RelayReport      `json:"relay,omitempty"`      // side A's relay stage
	Verdict    probe.Verdict           `json:"verdict"`
	Mismatches []string                `json:"mismatches,omitempty"` // techniques whose measurement differs from the prediction
	Error      string                  `json:"error,omitempty"`
}

// RunMatrix probes every pair of presets in its own lab.
func RunMatrix(ctx context.Context, o MatrixOptions) (*MatrixReport, error) {
	start := time.Now()
	presets := o.Presets
	if len(presets) == 0 {
		presets = testnet.Presets()
	}
	backend := o.Backend
	if backend == "" {
		backend = testnet.InProcess
	}
	ev := newEmitter(o.Events)
	plan, err := planMatrix(backend, presets)
	if err != nil {
		return nil, err
	}
	n := len(plan.Presets)
	ev.emit(StageMatrix, fmt.Sprintf("pairing %d presets in %d labs", n, n*(n+1)/2), plan)
	seg, err := testnet.ParseSegment(string(o.Segment))
	if err != nil {
		return nil, err
	}
	if seg == testnet.Shared && backend != testnet.Kernel {
		return nil, fmt.Errorf("topology %s: %w", seg, testnet.ErrNotSupported)
	}
	rep := &MatrixReport{Schema: MatrixSchema, NatlabVersion: buildinfo.Version(), Backend: string(backend), Topology: string(seg), Presets: plan.Presets, Excluded: plan.Excluded, Match: true}
	presets = rep.Presets
	for i := range presets {
		for j := i; j < len(presets); j++ {
			rep.Pairs = append(rep.Pairs, MatrixPair{A: presets[i], B: presets[j]})
		}
	}
	sem := make(chan struct{}, max(matrixParallel[backend], 1))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var fatal error
	for i := range rep.Pairs {
		wg.Add(1)
		go func(mp *MatrixPair) {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-sem }()
			err := runCell(ctx, backend, seg, mp, o.Logger)
			if errors.Is(err, testnet.ErrNeedPrivileges) {
				mu.Lock()
				fatal = err
				mu.Unlock()
			}
			ev.emit(probe.StagePair, fmt.Sprintf("%s × %s: %s", mp.A, mp.B, mp.Verdict.Summary), mp)
		}(&rep.Pairs[i])
	}
	wg.Wait()
	if fatal != nil {
		return nil, fatal
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("matrix: %w", err)
	}
	for _, p := range rep.Pairs {
		if p.Error != "" || len(p.Mismatches) > 0 {
			rep.Match = false
		}
	}
	rep.DurationMillis = millis.Since(start)
	return rep, nil
}

// planMatrix is the grid a backend can run: the presets, less those it
// cannot pair, with why.
func planMatrix(backend testnet.Backend, presets []string) (MatrixPlan, error) {
	plan := MatrixPlan{Backend: string(backend)}
	for _, p := range presets {
		n, err := testnet.Preset(p)
		if err != nil {
			return MatrixPlan{}, err
		}
		if why := Exclusion(n, backend); why != "" {
			if plan.Excluded == nil {
				plan.Excluded = map[string]string{}
			}
			plan.Excluded[p] = why
			continue
		}
		plan.Presets = append(plan.Presets, p)
	}
	return plan, nil
}

// Exclusion says why the matrix leaves a preset out on a backend, or "".
func Exclusion(n testnet.NAT, backend testnet.Backend) string {
	inproc := backend == testnet.InProcess || backend == ""
	switch {
	case n.BlockUDP && inproc:
		// Without UDP a host reaches the rendezvous only over TCP,
		// which the in-process lab does not have.
		return "UDP is blocked and the in-process lab has no TCP: use --kernel"
	case n.TCP != nil && inproc:
		return "TCP differs from UDP; no TCP in-process: use --kernel"
	}
	return ""
}

// runCell builds a lab for one pair and runs both probes in it.
func runCell(ctx context.Context, backend testnet.Backend, seg testnet.Segment, mp *MatrixPair, log *slog.Logger) error {
	fail := func(err error) error {
		mp.Error = err.Error()
		mp.Verdict = probe.Verdict{Summary: "error: " + err.Error()}
		return err
	}
	topo, err := testnet.PairTopology(mp.A, mp.B)
	if err != nil {
		return fail(err)
	}
	topo.Segment = seg
	lab, err := testnet.Start(ctx, topo, backend)
	if err != nil {
		return fail(err)
	}
	defer lab.Close()
	reps, err := RunPair(ctx, lab, log)
	if err != nil {
		return fail(err)
	}
	mp.fill(reps[0])
	return nil
}

// fill records a pair's outcome from site a's report (whichever side it
// drew: both agreed on every technique).
func (mp *MatrixPair) fill(a *probe.Report) {
	mp.Techniques, mp.Relay, mp.Verdict = a.Techniques, a.Relay, a.Verdict
	mp.Mismatches = mismatches(a.Techniques)
}

func mismatches(ts []probe.TechniqueResult) []string {
	var out []string
	for _, t := range ts {
		if t.Predicted != t.Measured {
			m := fmt.Sprintf("%s: predicted %s (%s), measured %s", t.Technique, t.Predicted, t.Reason, t.Measured)
			if t.Error != "" {
				m += " (" + t.Error + ")"
			}
			out = append(out, m)
		}
	}
	return out
}

// Cell returns the pair for presets a and b in either order, or nil.
func (r *MatrixReport) Cell(a, b string) *MatrixPair {
	for i, p := range r.Pairs {
		if (p.A == a && p.B == b) || (p.A == b && p.B == a) {
			return &r.Pairs[i]
		}
	}
	return nil
}

// Best is the technique a cell's verdict chose, or "" when none worked.
func (p *MatrixPair) Best() natclass.Technique { return p.Verdict.Technique }

// RunPair starts natlab's server in a running two-site lab and runs a
// probe on each site's host, paired with a fresh code; it returns both
// reports, site a's first.
func RunPair(ctx context.Context, lab *testnet.Lab, log *slog.Logger) ([]*probe.Report, error) {
	if len(lab.Sites) != 2 {
		return nil, fmt.Errorf("a probe pair needs two sites, the lab has %d", len(lab.Sites))
	}
	srv, err := StartServer(lab, log)
	if err != nil {
		return nil, err
	}
	defer srv.Close()
	return pairOn(ctx, lab, log)
}

// pairOn runs a probe on each site's host of a lab whose server runs,
// paired with a fresh code.
func pairOn(ctx context.Context, lab *testnet.Lab, log *slog.Logger) ([]*probe.Report, error) {
	server := netip.AddrPortFrom(lab.Server.Addr(), STUNPort).String()
	code, err := rendezvous.NewCode()
	if err != nil {
		return nil, err
	}
	reps := make([]*probe.Report, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, site := range lab.Sites {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reps[i], errs[i] = probe.Run(ctx, probe.Options{
				Net: site.Host.Net, Server: server, Mode: rendezvous.Meet, Code: code, Logger: log,
				Gateway: site.Gateway(),
				// The lab knows which routers run a port-mapping daemon;
				// asking the others would only wait out the probe's bound.
				NoPortMap: !site.Spec.NAT.HasPortMapping(),
				Relay:     RelayConfig(lab),
			})
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return reps, nil
}
