package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pion/transport/v4"
	"github.com/pion/transport/v4/stdnet"
	"github.com/spf13/cobra"

	"github.com/natlab/natlab/internal/buildinfo"
	"github.com/natlab/natlab/internal/millis"
	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/portmap"
)

func init() { subcommandFns = append(subcommandFns, newCmdCheck) }

// CheckSchema versions the --json document of `natlab check`.
const CheckSchema = "natlab.check/v1"

// CheckOptions are the flags and dependencies of `natlab check`.
type CheckOptions struct {
	IO       IOStreams
	Output   outputFlags
	Servers  []string
	Lifetime bool
	PortMap  bool
	TCP      bool
	Timeout  time.Duration
	// Interval, if positive, keeps checking, one check per interval, one
	// JSON line each; Metrics serves them to Prometheus.
	Interval time.Duration
	Metrics  string
	// Weight is the users or traffic behind this host (natlab fleet); 0
	// leaves it out.
	Weight float64
	// Family is "4", "6", "both" or "" (both when the host has a global
	// IPv6 address and an IPv6-capable server is given, else IPv4).
	Family string
	// DNS64 is the resolver (HOST:PORT) asked for ipv4only.arpa when
	// IPv4 servers are unreachable; "" asks the system resolver.
	DNS64 string
	// Net opens the sockets; nil means the host's stack.
	Net transport.Net
}

// checkDocument is the --json output of `natlab check`.
type checkDocument struct {
	Schema        string            `json:"schema"`         // CheckSchema
	NatlabVersion string            `json:"natlab_version"` // the build that wrote it
	Profile       *natclass.Profile `json:"profile"`        // the NAT profile
	// PortMapping is what the gateway answers over UPnP-IGD, NAT-PMP and
	// PCP, and whether a test mapping let traffic in; null with --portmap=false.
	PortMapping *portmap.Report `json:"port_mapping"`
	// Weight is --weight: the users or traffic behind this host, for
	// natlab fleet.
	Weight float64 `json:"weight,omitempty"`
	// IPv6 is the IPv6 profile when IPv6 was checked (Profile is then
	// the IPv4 one, or the IPv6 one too with --family 6); IPv6Error says
	// why an IPv6 check beside an IPv4 one gave no profile.
	IPv6      *natclass.Profile `json:"ipv6,omitempty"`
	IPv6Error string            `json:"ipv6_error,omitempty"`
}

func newCmdCheck(s IOStreams) *cobra.Command { return NewCmdCheck(s, nil) }

// NewCmdCheck builds `natlab check`; runF replaces the run function in
// tests that only check flag parsing.
func NewCmdCheck(s IOStreams, runF func(context.Context, *CheckOptions) error) *cobra.Command {
	o := &CheckOptions{IO: s}
	c := &cobra.Command{
		Use:   "check --server HOST:PORT [--server HOST:PORT ...]",
		Short: "Discover this host's NAT behaviour (RFC 5780) against STUN servers",
		Long: `Run the RFC 5780 tests (mapping, filtering, hairpinning, port allocation and,
with --lifetime, binding lifetime) against one or more STUN servers and print
the NAT profile, and beside it the TCP profile (RFC 5382: mapping from one
port to the server's addresses, filtering by the server's connect-backs).
The first server that answers is the primary; more servers add evidence.
Tests a server cannot support are listed as not run.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if len(o.Servers) == 0 {
				return flagErrorf("at least one --server HOST:PORT is required")
			}
			for _, s := range o.Servers {
				if _, _, err := natclass.ParseServer(s); err != nil {
					return flagErrorf("--server: %v", err)
				}
			}
			if o.Timeout <= 0 {
				return flagErrorf("--timeout %v: must be positive", o.Timeout)
			}
			if o.Interval != 0 && o.Interval < minCheckInterval {
				return flagErrorf("--interval %v: want at least %v", o.Interval, minCheckInterval)
			}
			if o.Metrics != "" && o.Interval == 0 {
				return flagErrorf("--metrics needs --interval: a single check ends before anything could scrape it")
			}
			if o.Weight < 0 {
				return flagErrorf("--weight %v: want a positive number", o.Weight)
			}
			switch o.Family {
			case "", "4", "6", "both":
			default:
				return flagErrorf("--family %q: want 4, 6 or both", o.Family)
			}
			if runF != nil {
				return runF(c.Context(), o)
			}
			if o.Interval > 0 {
				return runCheckInterval(c.Context(), o)
			}
			return runCheck(c.Context(), o)
		},
	}
	c.Flags().StringArrayVar(&o.Servers, "server", nil, "STUN server HOST:PORT (repeatable; the first that answers is the primary)")
	c.Flags().BoolVar(&o.Lifetime, "lifetime", false, "also measure the binding lifetime (slow: waits for mappings to expire, up to 2 minutes)")
	c.Flags().BoolVar(&o.PortMap, "portmap", true, "also ask the gateway for a test port mapping (UPnP-IGD, NAT-PMP, PCP), concurrently with the STUN tests")
	c.Flags().BoolVar(&o.TCP, "tcp", true, "also measure the TCP profile (needs natlab serve for filtering), concurrently with the UDP tests")
	c.Flags().DurationVar(&o.Timeout, "timeout", natclass.DefaultTimeout, "bound on the whole check (not counting --lifetime)")
	c.Flags().DurationVar(&o.Interval, "interval", 0, "keep checking, one check per DURATION, one JSON line per check")
	c.Flags().StringVar(&o.Metrics, "metrics", "", "with --interval, serve the profile as Prometheus metrics on HOST:PORT at /metrics (for natlab fleet --prometheus)")
	c.Flags().StringVar(&o.DNS64, "dns64", "", "DNS64 resolver HOST:PORT for NAT64 discovery (RFC 7050) when IPv4 is unreachable (default: the system resolver)")
	c.Flags().StringVar(&o.Family, "family", "", "IP version to check: 4, 6 or both (default: both when this host has a global IPv6 address, else 4)")
	c.Flags().Float64Var(&o.Weight, "weight", 0, "the users or traffic behind this host, carried in --json and --metrics for natlab fleet")
	addOutputFlags(c, &o.Output)
	return c
}

func runCheck(ctx context.Context, o *CheckOptions) error {
	n := o.Net
	if n == nil {
		var err error
		if n, err = stdnet.NewNet(); err != nil {
			return fmt.Errorf("network stack: %w", err)
		}
	}
	fams, err := checkFamilies(o, n)
	if err != nil {
		return err
	}
	start := time.Now()
	pmc := startPortMapCheck(ctx, o, n)
	v6c := make(chan familyResult, 1)
	if len(fams) == 2 {
		go func() { v6c <- discoverFamily(ctx, o, n, natclass.IPv6) }()
	}
	first := discoverFamily(ctx, o, n, fams[0])
	if fams[0] == natclass.IPv4 && errors.Is(first.err, natclass.ErrServerUnreachable) {
		// No IPv4 path: an IPv6-only network may reach IPv4 through NAT64.
		if r, ok := discoverNAT64(ctx, o, n); ok {
			first = r
		}
	}
	p, err := first.p, first.err
	pm := <-pmc
	if p != nil {
		// The check's time is the user's wait: both probes.
		p.DurationMillis = millis.Since(start)
	}
	doc := checkDocument{Schema: CheckSchema, NatlabVersion: buildinfo.Version(), Profile: p, PortMapping: pm, Weight: o.Weight}
	if fams[0] == natclass.IPv6 {
		doc.IPv6 = p
	}
	if len(fams) == 2 {
		r := <-v6c
		doc.IPv6 = r.p
		if r.err != nil {
			doc.IPv6Error = r.err.Error()
		}
	}
	if errors.Is(err, natclass.ErrServerUnreachable) {
		// Nothing is known about this host's NAT: no type is claimed.
		return &ExitError{Code: ExitNoPath, Err: err}
	}
	if err != nil {
		return err
	}
	if err := report(o.IO.Out, o.Output, doc, func(w io.Writer) error { return writeFamilies(w, doc, len(fams) == 2) }); err != nil {
		return err
	}
	if p.NATType == natclass.UDPBlocked {
		return &ExitError{Code: ExitInternal, Err: errors.New(blockedMessage(p))}
	}
	return nil
}

func blockedMessage(p *natclass.Profile) string {
	var why []string
	for _, s := range p.Servers {
		why = append(why, fmt.Sprintf("%s: %s", s.Server, s.Error))
	}
	return "no STUN server answered over UDP (UDP blocked or server unreachable): " + strings.Join(why, "; ")
}

// writeProfile prints the profile as aligned "name  value" lines.
func writeProfile(w io.Writer, p *natclass.Profile, pm *portmap.Report) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	line := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	or := func(s, def string) string {
		if s == "" {
			return def
		}
		return s
	}
	line("NAT type", string(p.NATType))
	if p.NATType != natclass.UDPBlocked {
		line("mapping", or(string(p.Mapping), "undetermined"))
		line("filtering", or(string(p.Filtering), "undetermined"))
		line("mapped address", p.MappedAddress)
		line("local address", p.LocalAddress)
		line("hairpinning", p.Hairpinning.String())
		if pa := p.PortAllocation; pa != nil {
			v := string(pa.Pattern)
			if pa.Pattern == natclass.Sequential {
				v += fmt.Sprintf(" (step %d)", pa.Step)
			}
			line("port allocation", v)
		}
		if p.BindingLifetimeS != nil {
			line("binding lifetime", fmt.Sprintf("%.0f s", *p.BindingLifetimeS))
		}
		if p.NATDepth != nil {
			line("NAT depth", fmt.Sprintf("%d (path %s)", *p.NATDepth, strings.Join(p.Hops, " → ")))
		}
		line("server", fmt.Sprintf("%s (rtt %.1f ms)", p.Server, p.RTTMillis))
		if p.Translation != "" {
			line("translation", translationLine(p.Translation))
		}
		if p.NAT64Prefix != "" {
			line("NAT64 prefix", p.NAT64Prefix+" (from DNS64, RFC 7050)")
		}
		if p.Family == "ipv6" {
			line("global IPv6", or(strings.Join(p.GlobalAddresses, ", "), "none"))
		}
	}
	if t := p.TCP; t != nil {
		v := "TCP " + t.Brief()
		if t.MappedAddress != "" {
			v += ", mapped " + t.MappedAddress
		}
		line("TCP profile", strings.TrimPrefix(v, "TCP "))
		for _, n := range t.NotRun {
			line("not run", fmt.Sprintf("%s: %s", n.Test, n.Reason))
		}
	}
	for _, s := range p.Servers {
		if s.Error != "" && p.NATType != natclass.UDPBlocked {
			line("other server", fmt.Sprintf("%s: %s", s.Server, s.Error))
		}
	}
	for _, h := range p.Hints {
		line("hint", h)
	}
	for _, n := range p.NotRun {
		if p.NATType != natclass.UDPBlocked { // the error line says why, once
			line("not run", fmt.Sprintf("%s: %s", n.Test, n.Reason))
		}
	}
	if pm != nil {
		line("port mapping", portMapLine(pm))
	}
	line("took", fmt.Sprintf("%.0f ms", p.DurationMillis))
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write profile: %w", err)
	}
	return nil
}

// startPortMapCheck runs the port-mapping probe next to the STUN tests (it
// talks to the gateway, they to the server) and delivers its report, or
// nil when it does not run.
func startPortMapCheck(ctx context.Context, o *CheckOptions, n transport.Net) <-chan *portmap.Report {
	out := make(chan *portmap.Report, 1)
	ua, err := n.ResolveUDPAddr("udp4", o.Servers[0])
	if !o.PortMap || err != nil {
		out <- nil // Discover reports the bad server
		return out
	}
	var gw netip.Addr
	if o.Net == nil {
		// The host's own routing table knows its gateway; an injected
		// Net (a lab host) is left to guess from its interfaces.
		gw, _ = portmap.DefaultGateway()
	}
	ap := ua.AddrPort()
	go func() {
		r := portmap.Check(ctx, portmap.Options{Net: n, Gateway: gw}, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
		out <- &r
	}()
	return out
}

// portMapLine is the port-mapping line of the human summary.
func portMapLine(pm *portmap.Report) string {
	line := pm.Summary()
	if in := pm.Inbound; in != nil {
		line += fmt.Sprintf("; test mapping %s via %s: inbound %s", in.External, in.Protocol, in.Admitted)
		if in.Error != "" {
			line += " (" + in.Error + ")"
		}
	}
	return line
}
