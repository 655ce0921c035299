package lab_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/natlab/natlab/lab"
	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/testnet"
)

// BenchmarkSegmentCells runs the cells whose outcome depends on what lies
// between the routers (issue #10) NATLAB_SEGMENT_RUNS times (default 20)
// on the kernel lab, both topologies, and reports each technique's
// measured success rate next to its prediction. A prediction is a claim
// about every run: the benchmark fails if any run measures otherwise.
//
//	go test -run '^$' -bench SegmentCells -benchtime 1x -timeout 60m ./lab
func BenchmarkSegmentCells(b *testing.B) {
	runs := 20
	if v, err := strconv.Atoi(os.Getenv("NATLAB_SEGMENT_RUNS")); err == nil && v > 0 {
		runs = v
	}
	presets := []string{"port-restricted-cone", "restricted-cone-udp", "symmetric", "symmetric-sequential"}
	for range b.N {
		for _, seg := range testnet.Segments() {
			tally := map[string]*cellTally{}
			for run := range runs {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
				rep, err := lab.RunMatrix(ctx, lab.MatrixOptions{Backend: testnet.Kernel, Segment: seg, Presets: presets})
				cancel()
				if errors.Is(err, testnet.ErrNeedPrivileges) {
					b.Skipf("kernel lab: %v", err)
				}
				if err != nil {
					b.Fatal(err)
				}
				for _, p := range rep.Pairs {
					if p.Error != "" {
						b.Errorf("%s run %d: %s × %s: %s", seg, run, p.A, p.B, p.Error)
					}
					for _, tr := range p.Techniques {
						k := fmt.Sprintf("%s × %s %s", p.A, p.B, tr.Technique)
						c := tally[k]
						if c == nil {
							c = &cellTally{predicted: tr.Predicted}
							tally[k] = c
						}
						c.runs++
						if tr.Measured == natclass.Success {
							c.success++
						}
						if tr.Predicted != tr.Measured {
							c.mismatch++
						}
					}
				}
			}
			reportTally(b, seg, tally)
		}
	}
}

type cellTally struct {
	predicted               natclass.Outcome
	runs, success, mismatch int
}

func reportTally(b *testing.B, seg testnet.Segment, tally map[string]*cellTally) {
	keys := make([]string, 0, len(tally))
	for k, c := range tally {
		if c.predicted != natclass.Skipped {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	mism := 0
	for _, k := range keys {
		c := tally[k]
		// Printed, not logged: the benchmark log keeps only ten lines.
		fmt.Printf("%-7s %-58s predicted %-7s measured success %2d/%d\n", seg, k, c.predicted, c.success, c.runs)
		if c.mismatch > 0 {
			mism += c.mismatch
			b.Errorf("%s %s: predicted %s, %d of %d runs measured otherwise", seg, k, c.predicted, c.mismatch, c.runs)
		}
	}
	b.ReportMetric(float64(mism), string(seg)+"-mismatches")
}
