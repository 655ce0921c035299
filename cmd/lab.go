package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
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
	// IPv6 runs the dual-stack lab: one site per IPv6 preset, or per
	// IPv6Presets when --nat-a/--nat-b name some.
	IPv6        bool
	IPv6Presets []string
	// Segment joins the routers (--topology).
	Segment testnet.Segment
	Shape   linkFlags
	// MatrixPresets restricts --matrix to the presets named with
	// --nat-a/--nat-b, when either was given.
	MatrixPresets []string
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
each ` + defaultNATA + ` for IPv4, and checks both families; with --matrix it pairs the IPv6
presets and probes each pair over IPv6 too, every IPv6 technique predicted from both measured
IPv6 profiles. With --ipv6, --nat-a/--nat-b name IPv6 presets: those sites (or matrix rows) only.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := checkLabFlags(c, o); err != nil {
				return err
			}
			if o.IPv6 && !o.Kernel {
				return flagErrorf("--ipv6 needs --kernel: the in-process lab has no IPv6")
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
	c.Flags().BoolVar(&o.IPv6, "ipv6", false, "dual-stack kernel lab: one site per IPv6 preset (firewalls, NAT66, NPTv6, NAT64), both families checked")
	c.Flags().StringVar(&topology, "topology", string(testnet.Routed), "what joins the routers: routed (a router between every site and the server) or shared (routers and server on one segment; --kernel)")
	c.Flags().BoolVar(&o.Matrix, "matrix", false, "pair every preset with every other and try each technique: the P2P feasibility matrix (with --nat-a/--nat-b: those presets only)")
	addLinkFlags(c, &o.Shape)
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
			lo := lab.Options{Backend: backend, Segment: o.Segment, Lifetime: o.Lifetime, Events: emit}
			var err error
			if o.IPv6 {
				lo.Topology, err = testnet.IPv6Topology(o.IPv6Presets...)
			} else {
				lo.Topology, err = labTopology(o.NATA, o.NATB, o.Shape)
			}
			if err != nil {
				return nil, err
			}
			lo.Topology.Segment = o.Segment
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
		return &ExitError{Code: ExitInternal, Err: errors.New("lab: a measured profile differs from its preset, or a pair's measurement from its prediction (see above)")}
	}
	return nil
}

func writeLabReport(w io.Writer, r *lab.Report) error {
	fmt.Fprintf(w, "natlab lab (%s): STUN server %s\n\n", r.Backend, serverLine(r.Server))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "site\tpreset\tmeasured\tmapping\tfiltering\tports\thairpin\tok")
	for _, s := range r.Sites {
		if s.Profile == nil && s.Error == "" && s.IPv6Preset != "" {
			fmt.Fprintf(tw, "%s\t%s\tIPv6-only (NAT64)\t\t\t\t\t\t\t\n", s.Name, s.Preset)
			continue
		}
		if s.Profile == nil {
			fmt.Fprintf(tw, "%s\t%s\terror\t\t\t\t\t✗\n", s.Name, s.Preset)
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
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, s.Preset, p.NATType,
			p.Mapping.Abbrev("M"), p.Filtering.Abbrev("F"), ports, p.Hairpinning, ok)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write lab report: %w", err)
	}
	if err := writeLabIPv6(w, r); err != nil {
		return err
	}
	writeSiteNotes(w, r)
	if err := writeLabPair(w, r); err != nil {
		return err
	}
	verdict := "every profile matches its preset"
	if r.Pair != nil {
		verdict += " and every technique its prediction"
	}
	if !r.Match {
		verdict = "MISMATCH: natlab's profile differs from the preset, or a measurement from its prediction"
	}
	fmt.Fprintf(w, "\n%s (%.0f ms)\n", verdict, r.DurationMillis)
	return nil
}

// writeSiteNotes prints under the table what does not fit a row: each
// site's mapped address and TCP profile (IPv6's too), tests not run,
// mismatches.
func writeSiteNotes(w io.Writer, r *lab.Report) {
	for _, s := range r.Sites {
		var notes []string
		switch {
		case s.Profile == nil && s.Error == "" && s.IPv6Preset != "":
			// An IPv6-only site (NAT64): its row says so.
		case s.Profile == nil:
			notes = append(notes, "error: "+s.Error)
		default:
			notes = append(notes, fmt.Sprintf("mapped address %s, TCP %s", orDash(s.Profile.MappedAddress), s.Profile.TCP.Brief()))
			for _, n := range s.Profile.NotRun {
				notes = append(notes, fmt.Sprintf("not run: %s: %s", n.Test, n.Reason))
			}
		}
		if p6 := s.IPv6; p6 != nil {
			n := "IPv6 TCP " + p6.TCP.Brief()
			if p6.NATType == natclass.UDPBlocked && p6.TCP != nil {
				n += ", mapped address " + orDash(p6.TCP.MappedAddress)
			}
			notes = append(notes, n)
		}
		notes = append(notes, s.Mismatches...)
		for _, n := range notes {
			writeWrapped(w, "  site "+s.Name+": ", n)
		}
	}
}

// writeLabPair prints the two sites probed together: the matrix cell of
// their presets, alone.
func writeLabPair(w io.Writer, r *lab.Report) error {
	switch {
	case r.PairSkipped != "":
		writeWrapped(w, "\nnot paired: ", r.PairSkipped)
		return nil
	case r.Pair == nil:
		return nil
	}
	p := r.Pair
	fmt.Fprintf(w, "\npair a × b (%s × %s), as natlab probe on each host:\n", p.A, p.B)
	writeWrapped(w, "", p.Verdict.Summary)
	if p.Error != "" {
		return nil
	}
	fmt.Fprintln(w)
	if err := writeTechniques(w, p.Techniques); err != nil {
		return err
	}
	for _, m := range p.Mismatches {
		writeWrapped(w, "  mismatch: ", m)
	}
	return nil
}

// writeWrapped prints prefix and s wrapped to textWidth, continuation
// lines indented by the prefix's width.
func writeWrapped(w io.Writer, prefix, s string) {
	lead := strings.TrimLeft(prefix, "\n")
	indent := strings.Repeat(" ", len([]rune(lead)))
	for i, l := range wrap(s, textWidth-len([]rune(lead))) {
		if i == 0 {
			fmt.Fprintf(w, "%s%s\n", prefix, l)
			continue
		}
		fmt.Fprintf(w, "%s%s\n", indent, l)
	}
}

// serverLine names the lab server by its primary socket and its
// alternate (other IP and port), the two RFC 5780 clients are told of.
func serverLine(socks []string) string {
	switch len(socks) {
	case 0:
		return "-"
	case 1:
		return socks[0]
	}
	return fmt.Sprintf("%s (alternate %s)", socks[0], socks[len(socks)-1])
}

// checkLabFlags checks what `natlab lab` can do with its flags before
// anything is built.
func checkLabFlags(c *cobra.Command, o *LabOptions) error {
	if o.IPv6 {
		return checkIPv6Presets(c, o)
	}
	if err := checkPresets(o.NATA, o.NATB); err != nil {
		return err
	}
	if err := o.Shape.check(); err != nil {
		return err
	}
	if !o.Kernel {
		for _, p := range []struct{ flag, v string }{{"--nat-a", o.NATA}, {"--nat-b", o.NATB}} {
			if n, err := testnet.Preset(p.v); err == nil && n.HasPortMapping() {
				return flagErrorf("%s %s: port mapping runs miniupnpd on the router, which only the kernel lab has: add --kernel", p.flag, p.v)
			}
		}
	}
	if o.Matrix {
		if o.Shape != (linkFlags{}) {
			return flagErrorf("--delay and --loss shape a single lab, not --matrix")
		}
		if c.Flags().Changed("nat-a") || c.Flags().Changed("nat-b") {
			// The matrix over the named presets only: each with
			// itself and with the other.
			o.MatrixPresets = []string{o.NATA}
			if o.NATB != "" && o.NATB != o.NATA {
				o.MatrixPresets = append(o.MatrixPresets, o.NATB)
			}
		}
	}
	return nil
}

// checkIPv6Presets: with --ipv6, --nat-a and --nat-b name IPv6 presets
// (each site's IPv4 side is defaultNATA): the lab's sites, or the
// matrix's rows, are those presets only; without them, every IPv6
// preset.
func checkIPv6Presets(c *cobra.Command, o *LabOptions) error {
	if o.Shape != (linkFlags{}) {
		return flagErrorf("--delay and --loss shape the IPv4 two-site lab, not --ipv6")
	}
	o.IPv6Presets = nil
	for _, p := range []struct{ flag, v string }{{"--nat-a", o.NATA}, {"--nat-b", o.NATB}} {
		if !c.Flags().Changed(p.flag[2:]) || p.v == "" || slices.Contains(o.IPv6Presets, p.v) {
			continue
		}
		if _, err := testnet.Preset6(p.v); err != nil {
			return flagErrorf("%s with --ipv6 names an IPv6 preset (each site is %s for IPv4): %v", p.flag, defaultNATA, err)
		}
		o.IPv6Presets = append(o.IPv6Presets, p.v)
	}
	if o.Matrix {
		o.MatrixPresets = o.IPv6Presets
	}
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
		ports, m, f := "-", p.Mapping.Abbrev("M"), p.Filtering.Abbrev("F")
		if p.PortAllocation != nil {
			ports = string(p.PortAllocation.Pattern)
		}
		if p.NATType == natclass.UDPBlocked {
			m, f = "-", "-" // no UDP to classify: the notes give TCP's
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, s.IPv6Preset, p.NATType, orDash(p.Translation),
			m, f, ports, orDash(p.MappedAddress), ok)
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
