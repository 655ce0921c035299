package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/pion/transport/v4"
	"github.com/pion/transport/v4/stdnet"
	"github.com/spf13/cobra"

	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/probe"
	"github.com/natlab/natlab/rendezvous"
)

func init() { subcommandFns = append(subcommandFns, newCmdProbe) }

// Exit codes of `natlab probe` (and `natlab lab` pairs), documented in the
// README.
const (
	ExitRelay  = 3 // no direct technique worked: a relay is required
	ExitNoPath = 4 // not even the server is reachable
)

// ProbeOptions are the flags and dependencies of `natlab probe`.
type ProbeOptions struct {
	IO          IOStreams
	Output      outputFlags
	Events      bool
	Server      string
	Join        string
	Code        string
	PairTimeout time.Duration
	// Net opens the sockets; nil means the host's stack.
	Net transport.Net
}

func newCmdProbe(s IOStreams) *cobra.Command { return NewCmdProbe(s, nil) }

// NewCmdProbe builds `natlab probe`; runF replaces the run function in
// tests that only check flag parsing.
func NewCmdProbe(s IOStreams, runF func(context.Context, *ProbeOptions) error) *cobra.Command {
	o := &ProbeOptions{IO: s}
	c := &cobra.Command{
		Use:   "probe --server HOST:PORT [--join CODE | --code CODE]",
		Short: "Pair with a probe on another host and find out how the two can talk",
		Long: `Run on both hosts with the same server. The first prints a pairing code; the
second joins with --join CODE (or both pass the same --code). Each profiles
its NAT, the two exchange candidates through the server, and then try every
direct technique together (UDP hole punching, port prediction, birthday
probing, TCP simultaneous open), predicted and measured side by side.

Exit status: 0 a direct path works, 3 a relay is required, 4 the server is
unreachable, 2 usage error, 1 internal error.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if o.Server == "" {
				return flagErrorf("--server HOST:PORT is required")
			}
			if _, _, err := natclass.ParseServer(o.Server); err != nil {
				return flagErrorf("--server: %v", err)
			}
			if o.Join != "" && o.Code != "" {
				return flagErrorf("--join and --code are exclusive: --join a code the other host printed, or --code a code you both chose")
			}
			for _, code := range []string{o.Join, o.Code} {
				if code == "" {
					continue
				}
				if _, err := rendezvous.NormalizeCode(code); err != nil {
					return flagErrorf("%v", err)
				}
			}
			if o.PairTimeout <= 0 {
				return flagErrorf("--pair-timeout must be positive")
			}
			if runF != nil {
				return runF(c.Context(), o)
			}
			return runProbe(c.Context(), o)
		},
	}
	c.Flags().StringVar(&o.Server, "server", "", "natlab serve's HOST:PORT (STUN and rendezvous)")
	c.Flags().StringVar(&o.Join, "join", "", "join the pairing CODE the other host printed")
	c.Flags().StringVar(&o.Code, "code", "", "a pre-shared pairing CODE both hosts pass")
	c.Flags().DurationVar(&o.PairTimeout, "pair-timeout", probe.DefaultPairTimeout, "how long to wait for the peer")
	c.Flags().BoolVar(&o.Events, "events", false, "print progress events as JSON lines, then the report as the last line")
	addOutputFlags(c, &o.Output)
	return c
}

func runProbe(ctx context.Context, o *ProbeOptions) error {
	n := o.Net
	if n == nil {
		var err error
		if n, err = stdnet.NewNet(); err != nil {
			return fmt.Errorf("network stack: %w", err)
		}
	}
	opts := probe.Options{Net: n, Server: o.Server, PairTimeout: o.PairTimeout, Mode: rendezvous.Create}
	switch {
	case o.Join != "":
		opts.Mode, opts.Code = rendezvous.Join, o.Join
	case o.Code != "":
		opts.Mode, opts.Code = rendezvous.Meet, o.Code
	}
	opts.OnCode = func(code string) {
		if opts.Mode == rendezvous.Create {
			fmt.Fprintf(o.IO.ErrOut, "pairing code: %s\non the other host run: natlab probe --server %s --join %s\n", code, o.Server, code)
		}
	}
	var mu sync.Mutex // events come from the probe's goroutines
	switch {
	case o.Events:
		opts.Events = func(e probe.Event) {
			mu.Lock()
			defer mu.Unlock()
			_ = writeJSONLine(o.IO.Out, e)
		}
	case !o.Output.JSON:
		opts.Events = func(e probe.Event) {
			if e.Stage == "verdict" || (e.Stage == "technique" && e.Outcome == "") {
				return // the report prints these
			}
			mu.Lock()
			defer mu.Unlock()
			fmt.Fprintf(o.IO.ErrOut, "%7.0f ms  %s\n", e.Elapsed, e.Message)
		}
	}
	rep, err := probe.Run(ctx, opts)
	if err != nil {
		if errors.Is(err, probe.ErrNoPath) {
			return &ExitError{Code: ExitNoPath, Err: err}
		}
		return err
	}
	switch {
	case o.Events:
		err = writeJSONLine(o.IO.Out, rep)
	case o.Output.JSON:
		err = writeJSON(o.IO.Out, rep)
	default:
		err = writeProbeReport(o.IO.Out, rep)
	}
	if err != nil {
		return err
	}
	if !rep.Verdict.Direct {
		return &ExitError{Code: ExitRelay}
	}
	return nil
}

func writeProbeReport(w io.Writer, r *probe.Report) error {
	fmt.Fprintf(w, "%s\n\n", r.Verdict.Summary)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "this host (%s)\t%s\t%s %s\t%s\n", r.Side, r.Self.NATType, abbrev(r.Self.Mapping, "M"), abbrev(r.Self.Filtering, "F"), orDash(r.Self.MappedAddress))
	fmt.Fprintf(tw, "peer\t%s\t%s %s\t%s\n", r.Peer.NATType, abbrev(r.Peer.Mapping, "M"), abbrev(r.Peer.Filtering, "F"), orDash(r.Peer.Mapped))
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "technique\tpredicted\tmeasured\tattempts\tfirst packet\trtt\twhy")
	for _, t := range r.Techniques {
		first, rtt := "-", "-"
		if t.Measured == natclass.Success {
			first, rtt = fmt.Sprintf("%.1f ms", t.TimeToFirstPacketMillis), fmt.Sprintf("%.2f ms", t.RTTMillis)
		}
		why := t.Reason
		if t.Error != "" && t.Measured != t.Predicted {
			why = t.Error
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", t.Technique, t.Predicted, t.Measured, t.Attempts, first, rtt, why)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}
