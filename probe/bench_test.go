package probe_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/natlab/natlab/lab"
	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/probe"
	"github.com/natlab/natlab/testnet"
)

// benchOneWay is each site's one-way WAN delay in the punching benchmark:
// 12.5 ms on both sides makes the peer-to-peer RTT 50 ms, as issue #4 asks.
const benchOneWay = 12500 * time.Microsecond

// BenchmarkPunch50ms measures, on the kernel lab with a 50 ms RTT between
// the peers, the time from the synchronised start of the winning technique
// to the first direct packet (in RTTs) and the success rate. Run it with
//
//	go test -run - -bench Punch50ms -benchtime 20x ./probe/
//
// for 20 runs per pair.
func BenchmarkPunch50ms(b *testing.B) {
	pairs := []struct {
		a, b string
		want natclass.Technique
	}{
		{"port-restricted-cone", "port-restricted-cone", natclass.DirectUDP},
		{"full-cone", "port-restricted-cone", natclass.DirectUDP},
		{"restricted-cone", "double-nat", natclass.DirectUDP},
		{"symmetric-sequential", "port-restricted-cone", natclass.PredictUDP},
		{"symmetric", "full-cone", natclass.DirectUDP},
		{"symmetric", "port-restricted-cone", natclass.Birthday},
	}
	for _, p := range pairs {
		b.Run(p.a+"×"+p.b, func(b *testing.B) {
			var ok, rtts, ms float64
			for range b.N {
				r, err := punchOnce(p.a, p.b, p.want)
				if errors.Is(err, testnet.ErrNeedPrivileges) {
					b.Skipf("kernel lab: %v", err)
				}
				if err != nil {
					b.Logf("run failed: %v", err)
					continue
				}
				if r.Measured == natclass.Success {
					ok++
					ms += r.TimeToFirstPacketMillis
					rtts += r.TimeToFirstPacketMillis / 50
				}
			}
			b.ReportMetric(100*ok/float64(b.N), "success-%")
			if ok > 0 {
				b.ReportMetric(rtts/ok, "RTTs-to-first-packet")
				b.ReportMetric(ms/ok, "ms-to-first-packet")
			}
		})
	}
}

// punchOnce runs one probe pair and returns side a's result for want.
func punchOnce(natA, natB string, want natclass.Technique) (probe.TechniqueResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*pairBound)
	defer cancel()
	topo, err := testnet.PairTopology(natA, natB)
	if err != nil {
		return probe.TechniqueResult{}, err
	}
	for i := range topo.Sites {
		topo.Sites[i].WAN.Delay = benchOneWay
	}
	tl, err := testnet.Start(ctx, topo, testnet.Kernel)
	if err != nil {
		return probe.TechniqueResult{}, err
	}
	defer tl.Close()
	reps, err := lab.RunPair(ctx, tl, nil)
	if err != nil {
		return probe.TechniqueResult{}, err
	}
	for _, t := range reps[0].Techniques {
		if t.Technique == want {
			return t, nil
		}
	}
	return probe.TechniqueResult{}, errors.New("technique not in report")
}
