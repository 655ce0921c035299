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
	// testnet.Presets() when empty, testnet.IPv6Presets() with IPv6.
	Presets []string
	// IPv6 pairs IPv6 presets (kernel only): each site dual stack, its
	// IPv4 side testnet.IPv6Topology's; both probes punch over IPv6 too,
	// and each cell gains its IPv6 rows, predicted from both measured
	// IPv6 profiles.
	IPv6 bool
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
	// IPv6: the presets are IPv6 presets, each cell has IPv6 rows.
	IPv6 bool `json:"ipv6,omitempty"`
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
	// IPv6 are the IPv6 rows (MatrixOptions.IPv6), side A's view,
	// agreed with B.
	IPv6       []probe.TechniqueResult `json:"ipv6_techniques,omitempty"`
	Relay      *probe.RelayReport      `json:"relay,omitempty"` // side A's relay stage
	Verdict    probe.Verdict           `json:"verdict"`
	Mismatches []string                `json:"mismatches,omitempty"` // techniques whose measurement differs from the prediction
	Error      string                  `json:"error,omitempty"`
}

// RunMatrix probes every pair of presets in its own lab.
func RunMatrix(ctx context.Context, o MatrixOptions) (*MatrixReport, error) {
	start := time.Now()
	backend := o.Backend
	if backend == "" {
		backend = testnet.InProcess
	}
	presets := o.Presets
	switch {
	case o.IPv6 && backend != testnet.Kernel:
		return nil, fmt.Errorf("IPv6 matrix on the %s lab: %w (use the kernel lab)", backend, testnet.ErrNotSupported)
	case len(presets) == 0 && o.IPv6:
		presets = testnet.IPv6Presets()
	case len(presets) == 0:
		presets = testnet.Presets()
	}
	ev := newEmitter(o.Events)
	plan, err := planMatrix(backend, presets, o.IPv6)
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
	rep := &MatrixReport{Schema: MatrixSchema, NatlabVersion: buildinfo.Version(), Backend: string(backend), IPv6: o.IPv6, Topology: string(seg), Presets: plan.Presets, Excluded: plan.Excluded, Match: true}
	cs := cellSpec{backend: backend, seg: seg, ipv6: o.IPv6, log: o.Logger}
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
			err := runCell(ctx, cs, mp)
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

// planMatrix is the grid a backend can run: the presets (IPv6 presets
// with ipv6), less those it cannot pair, with why.
func planMatrix(backend testnet.Backend, presets []string, ipv6 bool) (MatrixPlan, error) {
	plan := MatrixPlan{Backend: string(backend)}
	for _, p := range presets {
		var why string
		if ipv6 {
			// Every IPv6 preset pairs, nat64's IPv6-only host too (its
			// IPv4 plan goes through the NAT64).
			if _, err := testnet.Preset6(p); err != nil {
				return MatrixPlan{}, err
			}
		} else {
			n, err := testnet.Preset(p)
			if err != nil {
				return MatrixPlan{}, err
			}
			why = Exclusion(n, backend)
		}
		if why != "" {
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

// cellSpec is how every cell of one matrix is built.
type cellSpec struct {
	backend testnet.Backend
	seg     testnet.Segment
	ipv6    bool
	log     *slog.Logger
}

// runCell builds a lab for one pair and runs both probes in it.
func runCell(ctx context.Context, cs cellSpec, mp *MatrixPair) error {
	fail := func(err error) error {
		mp.Error = err.Error()
		mp.Verdict = probe.Verdict{Summary: "error: " + err.Error()}
		return err
	}
	var topo testnet.Topology
	var err error
	if cs.ipv6 {
		topo, err = testnet.IPv6Topology(mp.A, mp.B)
	} else {
		topo, err = testnet.PairTopology(mp.A, mp.B)
	}
	if err != nil {
		return fail(err)
	}
	topo.Segment = cs.seg
	lab, err := testnet.Start(ctx, topo, cs.backend)
	if err != nil {
		return fail(err)
	}
	defer lab.Close()
	reps, err := RunPair(ctx, lab, cs.log)
	if err != nil {
		return fail(err)
	}
	mp.fill(reps[0])
	if cs.ipv6 && len(mp.IPv6) == 0 {
		return fail(errors.New("the IPv6 plan did not run: a side has no IPv6 profile"))
	}
	return nil
}

// fill records a pair's outcome from site a's report (whichever side it
// drew: both agreed on every technique).
func (mp *MatrixPair) fill(a *probe.Report) {
	mp.Techniques, mp.Relay, mp.Verdict = a.Techniques, a.Relay, a.Verdict
	mp.Mismatches = mismatches(a.Techniques, "")
	if a.IPv6 != nil {
		mp.IPv6 = a.IPv6.Techniques
		mp.Mismatches = append(mp.Mismatches, mismatches(a.IPv6.Techniques, "ipv6 ")...)
	}
}

// mismatches lists the rows whose measurement differs from the
// prediction, each prefixed (the IPv6 rows' with "ipv6 ").
func mismatches(ts []probe.TechniqueResult, prefix string) []string {
	var out []string
	for _, t := range ts {
		if t.Predicted != t.Measured {
			m := fmt.Sprintf("%s%s: predicted %s (%s), measured %s", prefix, t.Technique, t.Predicted, t.Reason, t.Measured)
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

// RunPair starts natlab's server in a running two-site lab (on both
// families in a dual-stack lab) and runs a probe on each site's host,
// paired with a fresh code; it returns both reports, site a's first.
func RunPair(ctx context.Context, lab *testnet.Lab, log *slog.Logger) ([]*probe.Report, error) {
	if len(lab.Sites) != 2 {
		return nil, fmt.Errorf("a probe pair needs two sites, the lab has %d", len(lab.Sites))
	}
	srvs, err := StartServers(lab, log)
	if err != nil {
		return nil, err
	}
	defer srvs.Close()
	server6 := Server6(srvs)
	return pairOn(ctx, lab, server6, log)
}

// pairOn runs a probe on each site's host of a lab whose server runs,
// paired with a fresh code; with server6 (natlab serve's IPv6 address)
// the probes punch over IPv6 too.
func pairOn(ctx context.Context, lab *testnet.Lab, server6 string, log *slog.Logger) ([]*probe.Report, error) {
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
				Net: site.Host.Net, Server: server, Server6: server6, DNS64: dns64(site), Mode: rendezvous.Meet, Code: code, Logger: log,
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

// dns64 is the site's DNS64 resolver for its probe (an IPv6-only site
// behind NAT64 learns the prefix there), or "".
func dns64(site *testnet.Site) string {
	if !site.DNS64.IsValid() {
		return ""
	}
	return site.DNS64.String()
}
