package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/natlab/natlab/internal/buildinfo"
	"github.com/natlab/natlab/lab"
	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/probe"
	"github.com/natlab/natlab/testnet"
	"github.com/natlab/natlab/tui"
)

func init() { subcommandFns = append(subcommandFns, newCmdLab) }

// Default presets of `natlab lab`: a typical home router against the
// hardest common case, so a newcomer sees two different answers.
const (
	defaultNATA = "port-restricted-cone"
	defaultNATB = "symmetric"
)

// LabOptions are the flags and dependencies of `natlab lab`.
type LabOptions struct {
	IO       IOStreams
	Output   outputFlags
	NATA     string
	NATB     string
	Kernel   bool
	Lifetime bool
	Matrix   bool
	// IPv6 runs the dual-stack lab: one site per IPv6 preset.
	IPv6 bool
	// Segment joins the routers (--topology).
	Segment testnet.Segment
}

func newCmdLab(s IOStreams) *cobra.Command { return NewCmdLab(s, nil) }

// NewCmdLab builds `natlab lab`; runF replaces the run function in tests
// that only check flag parsing.
func NewCmdLab(s IOStreams, runF func(context.Context, *LabOptions) error) *cobra.Command {
	o := &LabOptions{IO: s}
	var topology string
	c := &cobra.Command{
		Use:   "lab [--nat-a PRESET] [--nat-b PRESET] [--kernel] [--topology routed|shared] [--matrix]",
		Short: "Build a lab network on this machine and profile NATs of known behaviour",
		Long: `Start a lab: a STUN server with two public addresses on an emulated internet
and two sites, each a NAT router with a preset behaviour and a host behind it.
natlab profiles each host as 'natlab check' would and compares the profile
with the preset. With --matrix, every pair of presets is probed as two
'natlab probe' hosts would: each technique predicted and measured. In-process by default (no privileges, UDP); --kernel builds
Linux network namespaces with real nftables NAT (root or CAP_NET_ADMIN).

On a terminal the run is shown live (the matrix is navigable: arrows move,
enter opens a pair, esc goes back; q quits, r reruns, ? help); piped, it
prints text; --json prints the report, --events JSON lines of progress with
the report last.

Exit status: 0 every measurement matches its preset or prediction, 1 a
mismatch or an internal error, 2 usage error.

Presets: ` + strings.Join(testnet.Presets(), ", ") + `.
Append ` + testnet.PortMappingSuffix + ` to a preset (kernel only) to run miniupnpd (UPnP-IGD, NAT-PMP, PCP) on its router.

--ipv6 (kernel only) builds one dual-stack site per IPv6 preset (` + strings.Join(testnet.IPv6Presets(), ", ") + `),
each ` + defaultNATA + ` for IPv4, and checks both families.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			for _, p := range []struct{ flag, v string }{{"--nat-a", o.NATA}, {"--nat-b", o.NATB}} {
				if p.v == "" && p.flag == "--nat-b" {
					continue
				}
				if _, err := testnet.Preset(p.v); err != nil {
					return flagErrorf("%s: %v", p.flag, err)
				}
			}
			if o.IPv6 && !o.Kernel {
				return flagErrorf("--ipv6 needs --kernel: the in-process lab has no IPv6")
			}
			if o.IPv6 && o.Matrix {
				return flagErrorf("--ipv6 with --matrix: natlab probe has no IPv6 candidates yet, so there is nothing to predict and measure per pair")
			}
			if o.IPv6 && (c.Flags().Changed("nat-a") || c.Flags().Changed("nat-b")) {
				return flagErrorf("--ipv6 runs the IPv6 presets (%s), each with %s for IPv4: --nat-a/--nat-b do not apply", strings.Join(testnet.IPv6Presets(), ", "), defaultNATA)
			}
			seg, err := testnet.ParseSegment(topology)
			if err != nil {
				return flagErrorf("--topology: %v", err)
			}
			if seg == testnet.Shared && !o.Kernel {
				return flagErrorf("--topology %s: the routers share a segment only on the kernel backend: add --kernel", seg)
			}
			o.Segment = seg
			if runF != nil {
				return runF(c.Context(), o)
			}
			return runLab(c.Context(), o)
		},
	}
	c.Flags().StringVar(&o.NATA, "nat-a", defaultNATA, "NAT preset of site A")
	c.Flags().StringVar(&o.NATB, "nat-b", defaultNATB, "NAT preset of site B (\"\" for one site only)")
	c.Flags().BoolVar(&o.Kernel, "kernel", false, "use Linux network namespaces and nftables (real NAT, UDP and TCP; needs CAP_NET_ADMIN)")
	c.Flags().BoolVar(&o.Lifetime, "lifetime", false, "also measure binding lifetimes (slow: waits for mappings to expire)")
	c.Flags().BoolVar(&o.IPv6, "ipv6", false, "dual-stack kernel lab: one site per IPv6 preset (firewall, open, NAT66, NPTv6), both families checked")
	c.Flags().StringVar(&topology, "topology", string(testnet.Routed), "what joins the routers: routed (a router between every site and the server) or shared (routers and server on one segment; --kernel)")
	c.Flags().BoolVar(&o.Matrix, "matrix", false, "pair every preset with every other and try each technique: the P2P feasibility matrix")
	addOutputFlags(c, &o.Output)
	addEventsFlag(c, &o.Output)
	// Runs before this command and every subcommand (cobra runs the
	// nearest PersistentPreRunE only).
	c.PersistentPreRunE = func(*cobra.Command, []string) error { return labUnsupported(labGOOS) }
	c.AddCommand(newCmdLabClean(s), newCmdLabPresets(s), newCmdLabUp(s), newCmdLabExec(s), newCmdLabDown(s), newCmdLabHold(s))
	return c
}

func runLab(ctx context.Context, o *LabOptions) error {
	backend := testnet.InProcess
	if o.Kernel {
		backend = testnet.Kernel
	}
	if o.Matrix {
		return runMatrix(ctx, o, backend)
	}
	rep, err := show(ctx, o.IO, o.Output, view[*lab.Report]{
		kind: tui.KindLab, title: "natlab lab",
		run: func(ctx context.Context, emit func(probe.Event)) (*lab.Report, error) {
			lo := lab.Options{Backend: backend, Segment: o.Segment, NATA: o.NATA, NATB: o.NATB, Lifetime: o.Lifetime, Events: emit}
			if o.IPv6 {
				var err error
				if lo.Topology, err = testnet.IPv6Topology(); err != nil {
					return nil, err
				}
			}
			return lab.Run(ctx, lo)
		},
		toTUI:   func(r *lab.Report) tui.Result { return tui.Result{Lab: r} },
		fromTUI: func(r tui.Result) *lab.Report { return r.Lab },
		text:    writeLabReport,
	})
	if err != nil {
		return err
	}
	return labExit(rep)
}

// labExit is the lab's exit status, the same whichever view ran.
func labExit(rep *lab.Report) error {
	if !rep.Match {
		// A lab whose profiles differ from their presets means natlab (or
		// the emulation) is wrong: say so through the exit code too.
		return &ExitError{Code: ExitInternal, Err: errors.New("lab: a measured profile differs from its preset (see mismatches above)")}
	}
	return nil
}

func writeLabReport(w io.Writer, r *lab.Report) error {
	fmt.Fprintf(w, "natlab lab (%s): STUN server %s\n\n", r.Backend, strings.Join(r.Server, " "))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "site\tpreset\tmeasured\tmapping\tfiltering\tports\thairpin\tmapped address\ttcp\tok")
	for _, s := range r.Sites {
		if s.Profile == nil && s.Error == "" && s.IPv6Preset != "" {
			fmt.Fprintf(tw, "%s\t%s\tIPv6-only (NAT64)\t\t\t\t\t\t\t\n", s.Name, s.Preset)
			continue
		}
		if s.Profile == nil {
			fmt.Fprintf(tw, "%s\t%s\terror: %s\t\t\t\t\t\t✗\n", s.Name, s.Preset, s.Error)
			continue
		}
		p := s.Profile
		ports := "-"
		if pa := p.PortAllocation; pa != nil {
			ports = string(pa.Pattern)
			if pa.Pattern == natclass.Sequential {
				ports += fmt.Sprintf("%+d", pa.Step)
			}
		}
		ok := "✓"
		if len(s.Mismatches) > 0 {
			ok = "✗"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, s.Preset, p.NATType,
			p.Mapping.Abbrev("M"), p.Filtering.Abbrev("F"), ports, p.Hairpinning, orDash(p.MappedAddress), p.TCP.Brief(), ok)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write lab report: %w", err)
	}
	if err := writeLabIPv6(w, r); err != nil {
		return err
	}
	for _, s := range r.Sites {
		for _, m := range s.Mismatches {
			fmt.Fprintf(w, "  site %s: %s\n", s.Name, m)
		}
		if s.Profile != nil {
			for _, n := range s.Profile.NotRun {
				fmt.Fprintf(w, "  site %s: not run: %s: %s\n", s.Name, n.Test, n.Reason)
			}
		}
	}
	verdict := "every profile matches its preset"
	if !r.Match {
		verdict = "MISMATCH: natlab's profile differs from the preset"
	}
	fmt.Fprintf(w, "\n%s (%.0f ms)\n", verdict, r.DurationMillis)
	return nil
}

// writeLabIPv6 is the IPv6 table of a dual-stack lab, one row per site.
func writeLabIPv6(w io.Writer, r *lab.Report) error {
	any6 := false
	for _, s := range r.Sites {
		any6 = any6 || s.ExpectedIPv6 != nil
	}
	if !any6 {
		return nil
	}
	fmt.Fprintln(w, "\nIPv6")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "site\tipv6 preset\tmeasured\ttranslation\tmapping\tfiltering\tports\tmapped address\tok")
	for _, s := range r.Sites {
		if s.ExpectedIPv6 == nil {
			continue
		}
		if s.IPv6 == nil {
			fmt.Fprintf(tw, "%s\t%s\terror: %s\t\t\t\t\t\t✗\n", s.Name, s.IPv6Preset, s.IPv6Error)
			continue
		}
		p, ok := s.IPv6, "✓"
		for _, m := range s.Mismatches {
			if strings.HasPrefix(m, "ipv6 ") {
				ok = "✗"
			}
		}
		ports := "-"
		if p.PortAllocation != nil {
			ports = string(p.PortAllocation.Pattern)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, s.IPv6Preset, p.NATType, orDash(p.Translation),
			p.Mapping.Abbrev("M"), p.Filtering.Abbrev("F"), ports, orDash(p.MappedAddress), ok)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write lab report: %w", err)
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newCmdLabClean(s IOStreams) *cobra.Command {
	var out outputFlags
	c := &cobra.Command{
		Use:   "clean",
		Short: "Remove network namespaces left behind by a crashed kernel lab",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			removed, err := testnet.Clean(c.Context())
			if err != nil {
				return err
			}
			doc := struct {
				Schema        string   `json:"schema"`
				NatlabVersion string   `json:"natlab_version"`
				Removed       []string `json:"removed"`
			}{"natlab.lab-clean/v1", buildinfo.Version(), append([]string{}, removed...)}
			return report(s.Out, out, doc, func(w io.Writer) error {
				if len(removed) == 0 {
					fmt.Fprintln(w, "nothing to clean")
				}
				for _, r := range removed {
					fmt.Fprintln(w, "removed", r)
				}
				return nil
			})
		},
	}
	addOutputFlags(c, &out)
	return c
}

func newCmdLabPresets(s IOStreams) *cobra.Command {
	var out outputFlags
	c := &cobra.Command{
		Use:   "presets",
		Short: "List the lab's NAT presets and the profile each should produce",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			type preset struct {
				Name     string           `json:"name"`
				NAT      testnet.NAT      `json:"nat"`
				Expected testnet.Expected `json:"expected"`
			}
			var ps []preset
			for _, name := range testnet.Presets() {
				n, err := testnet.Preset(name)
				if err != nil {
					return err
				}
				ps = append(ps, preset{name, n, n.Expect()})
			}
			doc := struct {
				Schema        string   `json:"schema"`
				NatlabVersion string   `json:"natlab_version"`
				Presets       []preset `json:"presets"`
			}{"natlab.lab-presets/v1", buildinfo.Version(), ps}
			return report(s.Out, out, doc, func(w io.Writer) error {
				tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "preset\tnat_type\tmapping\tfiltering\tports\thairpin")
				for _, p := range ps {
					e := p.Expected
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", p.Name, e.NATType, orDash(string(e.Mapping)), orDash(string(e.Filtering)), orDash(string(e.Allocation)), e.Hairpinning)
				}
				return tw.Flush()
			})
		},
	}
	addOutputFlags(c, &out)
	return c
}
