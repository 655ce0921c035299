package cmd

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/natlab/natlab/fleet"
	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/probe"
	"github.com/natlab/natlab/tui"
)

func init() { subcommandFns = append(subcommandFns, newCmdFleet) }

// FleetOptions are the flags of `natlab fleet`.
type FleetOptions struct {
	IO     IOStreams
	Output outputFlags
	// Paths are files, directories or "-" (stdin).
	Paths []string
	// TrafficBps is one pair's traffic (0: no bandwidth figure).
	TrafficBps float64
	// Prometheus is a Prometheus server's base URL to read the hosts
	// from (natlab check --interval --metrics series), besides Paths.
	Prometheus string
	// Timeout bounds the Prometheus queries.
	Timeout time.Duration
}

func newCmdFleet(s IOStreams) *cobra.Command {
	o := &FleetOptions{IO: s}
	var traffic string
	c := &cobra.Command{
		Use:   "fleet [FILE|DIR|-]...",
		Short: "Predict every pair of many hosts: direct share, relay share and its cost",
		Long: `Read many hosts' profiles (natlab check --json or natlab probe --json documents,
or JSON lines of them, from files, directories or stdin; each may carry a
"weight": the users or traffic behind that host) and predict every pair with
the probe's own predictor. Prints the share of pairs that go direct, per
technique, the share that needs a relay (over UDP, over TCP only, no path),
the NAT types behind the relay share and, with --traffic, the relay bandwidth.
With --prometheus it also reads every host that 'natlab check --interval
--metrics' exports and that Prometheus scrapes. On a terminal the result is a
heat map (q quits and leaves the text report).

Exit status: 0 the fleet was predicted, 1 unreadable input or Prometheus
error, 2 usage error.`,
		Example: `  natlab fleet profiles/
  natlab check --server stun.example.net:3478 --json | natlab fleet -
  natlab fleet --traffic 1M --json hosts.jsonl`,
		RunE: func(c *cobra.Command, args []string) error {
			o.Paths = args
			if len(o.Paths) == 0 && o.Prometheus == "" {
				return flagErrorf("give profile files, directories, - for stdin, or --prometheus URL")
			}
			if o.Prometheus != "" {
				if u, err := url.Parse(o.Prometheus); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
					return flagErrorf("--prometheus %q: want the server's http(s)://HOST:PORT", o.Prometheus)
				}
			}
			if traffic != "" {
				r, err := fleet.ParseRate(traffic)
				if err != nil {
					return flagErrorf("--traffic: %v", err)
				}
				o.TrafficBps = r
			}
			return runFleet(c.Context(), o)
		},
	}
	c.Flags().StringVar(&o.Prometheus, "prometheus", "", "read hosts from this Prometheus server's HTTP API (http://HOST:PORT): the natlab check --interval --metrics series it scrapes")
	c.Flags().DurationVar(&o.Timeout, "timeout", 30*time.Second, "bound on reading from --prometheus")
	c.Flags().StringVar(&traffic, "traffic", "", "traffic of one pair (bit/s, e.g. 64k, 1.5M): report the bandwidth the relays would carry")
	addOutputFlags(c, &o.Output)
	return c
}

func runFleet(ctx context.Context, o *FleetOptions) error {
	streams := o.IO
	if slices.Contains(o.Paths, "-") {
		// The TUI reads its keys from stdin, which carries the profiles.
		streams.IsTTY = false
	}
	_, err := show(ctx, streams, o.Output, view[*fleet.Report]{
		kind: tui.KindFleet, title: "natlab fleet · " + fleetSource(o),
		run:     func(ctx context.Context, _ func(probe.Event)) (*fleet.Report, error) { return predictFleet(ctx, o) },
		toTUI:   func(r *fleet.Report) tui.Result { return tui.Result{Fleet: r} },
		fromTUI: func(r tui.Result) *fleet.Report { return r.Fleet },
		text:    writeFleet,
	})
	return err
}

// fleetSource names the input in the TUI's title.
func fleetSource(o *FleetOptions) string {
	src := slices.Clone(o.Paths)
	if o.Prometheus != "" {
		src = append(src, o.Prometheus)
	}
	return strings.Join(src, " ")
}

// predictFleet reads every host and predicts the fleet.
func predictFleet(ctx context.Context, o *FleetOptions) (*fleet.Report, error) {
	f := fleet.New()
	if err := fleet.Load(ctx, o.Paths, o.IO.In, f.Add); err != nil {
		return nil, err
	}
	if o.Prometheus != "" {
		qctx, cancel := context.WithTimeout(ctx, o.Timeout)
		defer cancel()
		if err := fleet.LoadPrometheus(qctx, o.Prometheus, f.Add); err != nil {
			return nil, err
		}
	}
	return f.Report(fleet.Options{TrafficBps: o.TrafficBps}), nil
}

// fleetTypeNames are the NAT types as short row labels (the table fits
// 80 columns).
var fleetTypeNames = map[natclass.NATType]string{
	natclass.Open: "open", natclass.FullCone: "full-cone", natclass.RestrictedCone: "restricted",
	natclass.PortRestrictedCone: "port-restricted", natclass.Symmetric: "symmetric",
	natclass.SymmetricFirewall: "sym-firewall", natclass.UDPBlocked: "udp-blocked", natclass.Unknown: "unknown",
}

func pct(v float64) string { return fmt.Sprintf("%.1f%%", 100*v) }

func writeFleet(w io.Writer, r *fleet.Report) error {
	fmt.Fprintf(w, "natlab fleet: %d hosts (weight %g), %d pairs, %d classes\n\n", r.Hosts, r.Weight, r.Pairs, r.Classes)
	if r.Pairs == 0 {
		_, err := fmt.Fprintln(w, "fewer than two hosts: no pairs to predict")
		return err
	}
	fmt.Fprintf(w, "direct %s   relay %s: over UDP %s, over TCP only %s, no path %s\n",
		pct(r.DirectShare), pct(r.RelayShare), pct(r.Relay.UDP), pct(r.Relay.TCPOnly), pct(r.Relay.NoPath))
	if r.UnknownShare > 0 {
		fmt.Fprintf(w, "unknown %s: a profile on the way was not measured (a host's TCP)\n", pct(r.UnknownShare))
	}
	if r.TrafficBps > 0 {
		fmt.Fprintf(w, "relay bandwidth at %s per pair, every pair active: %s\n", fleet.FormatRate(r.TrafficBps), fleet.FormatRate(r.RelayBandwidthBps))
	}
	if k := r.Keepalive; k != nil {
		fmt.Fprintf(w, "keepalives: %.0f packets/h per direct UDP pair, %s/h in all (%s measured)\n",
			k.PacketsPerHourPerPair, count(k.PacketsPerHour), pct(k.PairShare))
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "technique\tshare of pairs")
	for _, t := range sortedShares(r.Techniques) {
		fmt.Fprintf(tw, "%s\t%s\n", t, pct(r.Techniques[t]))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write fleet: %w", err)
	}
	fmt.Fprintln(w)
	if err := writeFleetGrid(w, r); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nNAT types behind the relay share (a pair counts for both its types)")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "nat type\thosts\tshare of hosts\tof pairs\tdirect\tof relayed pairs")
	for _, t := range r.ByNATType {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", t.NATType, t.Hosts, pct(t.HostShare), pct(t.PairShare), pct(t.DirectShare), pct(t.ShareOfRelay))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write fleet: %w", err)
	}
	return nil
}

// writeFleetGrid is the NAT type × NAT type table: each row the share of
// a cell's pairs that go direct, and under it the share of all pairs the
// cell holds. Eight types fit 80 columns.
func writeFleetGrid(w io.Writer, r *fleet.Report) error {
	var types []natclass.NATType
	for _, t := range fleet.NATTypes {
		for _, c := range r.Cells {
			if (c.A == t || c.B == t) && !slices.Contains(types, t) {
				types = append(types, t)
			}
		}
	}
	cell := func(a, b natclass.NATType) *fleet.Cell {
		for i, c := range r.Cells {
			if (c.A == a && c.B == b) || (c.A == b && c.B == a) {
				return &r.Cells[i]
			}
		}
		return nil
	}
	var sb strings.Builder
	sb.WriteString("direct share per NAT-type pair (under it: the pair's share of all pairs)\n")
	fmt.Fprintf(&sb, "%-18s", "")
	for i := range types {
		fmt.Fprintf(&sb, "%7c", 'A'+i)
	}
	sb.WriteString("\n")
	for i, a := range types {
		direct := fmt.Sprintf("%c %-16s", 'A'+i, fleetTypeNames[a])
		share := fmt.Sprintf("%-18s", "")
		for _, b := range types {
			d, s := "-", "-"
			if c := cell(a, b); c != nil {
				d, s = fmt.Sprintf("%.0f%%", 100*c.DirectShare), pct(c.PairShare)
			}
			direct += fmt.Sprintf("%7s", d)
			share += fmt.Sprintf("%7s", s)
		}
		sb.WriteString(direct + "\n" + share + "\n")
	}
	if _, err := io.WriteString(w, sb.String()); err != nil {
		return fmt.Errorf("write fleet: %w", err)
	}
	return nil
}

// sortedShares are the keys, largest share first.
func sortedShares(m map[string]float64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		switch {
		case m[a] > m[b]:
			return -1
		case m[a] < m[b]:
			return 1
		}
		return strings.Compare(a, b)
	})
	return keys
}

// count prints a large number with an SI suffix: 3927879 is "3.93M".
func count(v float64) string {
	for _, u := range []struct {
		div    float64
		suffix string
	}{{1e9, "G"}, {1e6, "M"}, {1e3, "k"}} {
		if v >= u.div {
			return fmt.Sprintf("%.3g%s", v/u.div, u.suffix)
		}
	}
	return fmt.Sprintf("%.0f", v)
}
