package cmd

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pion/transport/v4/stdnet"

	"github.com/natlab/natlab/internal/buildinfo"
	"github.com/natlab/natlab/metrics"
	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/probe"
)

// minCheckInterval is the shortest --interval of natlab check: a check
// takes up to its timeout, and a faster cadence only loads the server.
const minCheckInterval = time.Second

// runCheckInterval checks once per interval until ctx ends, one JSON
// line per check (a stream natlab fleet reads), and with --metrics
// serves the last profile to Prometheus.
func runCheckInterval(ctx context.Context, o *CheckOptions) error {
	n := o.Net
	if n == nil {
		var err error
		if n, err = stdnet.NewNet(); err != nil {
			return fmt.Errorf("network stack: %w", err)
		}
	}
	var mc *metrics.Check
	if o.Metrics != "" {
		reg := metrics.NewRegistry()
		mc = metrics.NewCheck(reg, max(o.Weight, 1))
		ms, err := metrics.Listen(o.Metrics, reg)
		if err != nil {
			return err
		}
		defer ms.Close()
		fmt.Fprintf(o.IO.ErrOut, "serving metrics on %s\n", ms.URL())
	}
	tick := time.NewTicker(o.Interval)
	defer tick.Stop()
	for {
		pmc := startPortMapCheck(ctx, o, n)
		p, err := natclass.Discover(ctx, natclass.Options{Net: n, Servers: o.Servers, Timeout: o.Timeout, Lifetime: o.Lifetime})
		pm := <-pmc
		switch {
		case ctx.Err() != nil:
			return nil // interrupted: a clean stop
		case err != nil && !errors.Is(err, natclass.ErrServerUnreachable):
			return err
		case err != nil:
			fmt.Fprintf(o.IO.ErrOut, "check: %v\n", err)
			if mc != nil {
				mc.ObserveError()
			}
		default:
			if err := writeJSONLine(o.IO.Out, checkDocument{Schema: CheckSchema, NatlabVersion: buildinfo.Version(), Profile: p, PortMapping: pm, Weight: o.Weight}); err != nil {
				return err
			}
			if mc != nil {
				// A host running natlab has a TCP stack.
				mc.Observe(probe.HostSummary(p, pm, true), p)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}
