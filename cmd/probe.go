package cmd

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/pion/transport/v4"
	"github.com/pion/transport/v4/stdnet"
	"github.com/spf13/cobra"

	"github.com/natlab/natlab/metrics"
	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/probe"
	"github.com/natlab/natlab/rendezvous"
	"github.com/natlab/natlab/server"
	"github.com/natlab/natlab/tui"
)

func init() { subcommandFns = append(subcommandFns, newCmdProbe) }

// Exit codes of `natlab probe` (and `natlab lab` pairs), documented in the
// README.
const (
	ExitRelay  = 3 // no direct technique worked: a relay is required
	ExitNoPath = 4 // no path at all: no direct technique and no relay (or no server)
)

// ProbeOptions are the flags and dependencies of `natlab probe`.
type ProbeOptions struct {
	IO     IOStreams
	Output outputFlags
	Server string
	// Server6 is natlab serve's IPv6 address: with it the probe also
	// punches over IPv6 (when the peer has one too).
	Server6 string
	// DNS64 is the resolver asked for a NAT64 prefix when the server is
	// unreachable over IPv4 ("": the system resolver).
	DNS64       string
	Join        string
	Code        string
	PairTimeout time.Duration
	// Interval, if positive, keeps probing: one round per interval.
	Interval time.Duration
	// Metrics is the host:port to serve Prometheus metrics on (with
	// Interval).
	Metrics string
	// Lifetime adds the binding lifetime and keepalive cost to a direct
	// verdict.
	Lifetime bool
	// TURN credentials for the relay stage: a long-term user and password,
	// or the TURN REST API secret (coturn's use-auth-secret). None: no
	// relay stage.
	TURNUser     string
	TURNPassword string
	TURNSecret   string
	// TURNPasswordFile and TURNSecretFile hold the secrets on their first
	// line, off the command line (so do EnvTURNPassword, EnvAuthSecret).
	TURNPasswordFile string
	TURNSecretFile   string
	// TURNTLS is host:port of TURN over TLS, tried after UDP and TCP.
	TURNTLS string
	// Net opens the sockets; nil means the host's stack.
	Net transport.Net
}

// resolveSecrets reads the TURN secrets from their files or environment
// variables. $NATLAB_TURN_PASSWORD counts only with --turn-user, and
// $NATLAB_AUTH_SECRET only when no password was given, so a variable
// exported for another purpose does not change what the flags ask for.
func (o *ProbeOptions) resolveSecrets() error {
	env := ""
	if o.TURNUser != "" && o.TURNSecret == "" && o.TURNSecretFile == "" {
		env = EnvTURNPassword
	}
	pw, err := secretSource{"--turn-password", o.TURNPassword, "--turn-password-file", o.TURNPasswordFile, env}.resolve()
	if err != nil {
		return err
	}
	env = ""
	if pw == "" {
		env = EnvAuthSecret
	}
	secret, err := secretSource{"--turn-secret", o.TURNSecret, "--turn-secret-file", o.TURNSecretFile, env}.resolve()
	if err != nil {
		return err
	}
	o.TURNPassword, o.TURNSecret = pw, secret
	return nil
}

// turnCredentialLifetime is how long REST API credentials made from
// --turn-secret stay valid: a probe round takes well under a minute.
const turnCredentialLifetime = 10 * time.Minute

// relayConfig builds the relay stage's configuration from the flags, or
// nil when no credentials were given.
func (o *ProbeOptions) relayConfig() *probe.RelayConfig {
	user, pass := o.TURNUser, o.TURNPassword
	if o.TURNSecret != "" {
		user, pass = server.EphemeralCredentials(o.TURNSecret, cmp.Or(o.TURNUser, "natlab-probe"), time.Now().Add(turnCredentialLifetime))
	} else if user == "" {
		return nil
	}
	return &probe.RelayConfig{Server: o.Server, TLSServer: o.TURNTLS, Username: user, Password: pass}
}

// minInterval is the shortest --interval: a round takes seconds (longer
// with birthday probing), and rounds that overrun skip to the next slot
// anyway, so shorter would only mean skipped slots.
const minInterval = 5 * time.Second

// minPairWindow is the least time left in a slot worth pairing in: the
// rendezvous needs a few round trips to the server.
const minPairWindow = time.Second

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
probing, TCP simultaneous open), predicted and measured side by side. On an
IPv6-only network the IPv4 side goes through the NAT64 that DNS64 reveals
(RFC 7050; --dns64 to name the resolver).

On a terminal the probe is shown live (stages, both NAT profiles, each
technique as it is tried, the verdict; q quits, r reruns, ? help: press r on
both hosts to pair again). Piped, it prints text; --json prints the report,
--events JSON lines of progress.

With --interval it keeps probing, one round per interval, printing each
round's report as one JSON line, until interrupted; --metrics HOST:PORT serves
Prometheus metrics of the rounds. Both hosts pass the same --interval and the
same code (--code on both, or --join the code the first host printed): each
round pairs on a code derived from it and the round's time slot, so a host
that misses a round meets its peer again in the next.

Exit status: 0 a direct path works, 3 a relay is required, 4 the server is
unreachable, 2 usage error, 1 internal error. With --interval: 0 once
interrupted, 1 if metrics cannot be served.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if o.Server == "" {
				return flagErrorf("--server HOST:PORT is required")
			}
			if _, _, err := natclass.ParseServer(o.Server); err != nil {
				return flagErrorf("--server: %v", err)
			}
			for _, f := range [][2]string{{"--server6", o.Server6}, {"--dns64", o.DNS64}} {
				if _, _, err := natclass.ParseServer(f[1]); f[1] != "" && err != nil {
					return flagErrorf("%s: %v", f[0], err)
				}
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
			if err := o.resolveSecrets(); err != nil {
				return err
			}
			if o.TURNSecret == "" && (o.TURNUser == "") != (o.TURNPassword == "") {
				return flagErrorf("--turn-user and --turn-password go together (or use --turn-secret)")
			}
			if o.TURNSecret != "" && o.TURNPassword != "" {
				return flagErrorf("--turn-secret and --turn-password are exclusive")
			}
			if o.PairTimeout <= 0 {
				return flagErrorf("--pair-timeout must be positive")
			}
			if o.Interval != 0 && o.Interval < minInterval {
				return flagErrorf("--interval %v: want at least %v (a round takes seconds)", o.Interval, minInterval)
			}
			if o.Metrics != "" && o.Interval == 0 {
				return flagErrorf("--metrics needs --interval: a single probe ends before anything could scrape it")
			}
			if runF != nil {
				return runF(c.Context(), o)
			}
			return runProbe(c.Context(), o)
		},
	}
	c.Flags().StringVar(&o.Server, "server", "", "natlab serve's HOST:PORT (STUN and rendezvous)")
	c.Flags().StringVar(&o.DNS64, "dns64", "", "DNS64 resolver HOST:PORT for NAT64 discovery (RFC 7050) when the server is unreachable over IPv4 (default: the system resolver)")
	c.Flags().StringVar(&o.Server6, "server6", "", "natlab serve's IPv6 [HOST]:PORT: also profile and punch over IPv6 when the peer can (the verdict prefers the family that works best)")
	c.Flags().StringVar(&o.Join, "join", "", "join the pairing CODE the other host printed")
	c.Flags().StringVar(&o.Code, "code", "", "a pre-shared pairing CODE both hosts pass")
	c.Flags().StringVar(&o.TURNUser, "turn-user", "", "TURN user for the relay stage (with --turn-password, or the user part of --turn-secret credentials)")
	c.Flags().StringVar(&o.TURNPassword, "turn-password", "", "TURN password for --turn-user (visible in ps: prefer --turn-password-file or $"+EnvTURNPassword+")")
	c.Flags().StringVar(&o.TURNPasswordFile, "turn-password-file", "", "file whose first line is the TURN password for --turn-user")
	c.Flags().StringVar(&o.TURNSecret, "turn-secret", "", "TURN REST API shared secret (natlab serve's, coturn static-auth-secret; visible in ps: prefer --turn-secret-file or $"+EnvAuthSecret+")")
	c.Flags().StringVar(&o.TURNSecretFile, "turn-secret-file", "", "file whose first line is the TURN REST API shared secret")
	c.Flags().StringVar(&o.TURNTLS, "turn-tls", "", "HOST:PORT of TURN over TLS, tried when UDP and TCP to the relay fail")
	c.Flags().DurationVar(&o.PairTimeout, "pair-timeout", probe.DefaultPairTimeout, "how long to wait for the peer")
	c.Flags().DurationVar(&o.Interval, "interval", 0, "keep probing, one round per DURATION, one JSON report line per round (both hosts pass the same value)")
	c.Flags().StringVar(&o.Metrics, "metrics", "", "with --interval, serve Prometheus metrics on HOST:PORT at /metrics")
	c.Flags().BoolVar(&o.Lifetime, "lifetime", false, "after a direct UDP verdict, measure this host's binding lifetimes and add the keepalive interval and packets per hour (up to 2 minutes more)")
	addOutputFlags(c, &o.Output)
	addEventsFlag(c, &o.Output)
	return c
}

// probeOptions turns the flags into the probe's options (without views).
func probeOptions(o *ProbeOptions) (probe.Options, error) {
	n := o.Net
	if n == nil {
		var err error
		if n, err = stdnet.NewNet(); err != nil {
			return probe.Options{}, fmt.Errorf("network stack: %w", err)
		}
	}
	opts := probe.Options{Net: n, Server: o.Server, Server6: o.Server6, DNS64: o.DNS64, PairTimeout: o.PairTimeout, Mode: rendezvous.Create, Relay: o.relayConfig(), Lifetime: o.Lifetime}
	switch {
	case o.Join != "":
		opts.Mode, opts.Code = rendezvous.Join, o.Join
	case o.Code != "":
		opts.Mode, opts.Code = rendezvous.Meet, o.Code
	}
	return opts, nil
}

// printCode tells the person at the first host what to run on the other.
func printCode(w io.Writer, o *ProbeOptions, code string) {
	extra := ""
	if o.Server6 != "" {
		extra += " --server6 " + o.Server6
	}
	if o.Interval > 0 {
		extra += " --interval " + o.Interval.String()
	}
	fmt.Fprintf(w, "pairing code: %s\non the other host run: natlab probe --server %s%s --join %s\n", code, o.Server, extra, code)
}

func runProbe(ctx context.Context, o *ProbeOptions) error {
	opts, err := probeOptions(o)
	if err != nil {
		return err
	}
	if o.Interval > 0 {
		return runProbeInterval(ctx, o, opts)
	}
	if !useTUI(o.IO, o.Output) {
		opts.OnCode = func(code string) {
			if opts.Mode == rendezvous.Create {
				printCode(o.IO.ErrOut, o, code)
			}
		}
	}
	rep, err := show(ctx, o.IO, o.Output, view[*probe.Report]{
		kind: tui.KindProbe, title: "natlab probe · server " + o.Server,
		run:     probeRuns(opts),
		toTUI:   func(r *probe.Report) tui.Result { return tui.Result{Probe: r} },
		fromTUI: func(r tui.Result) *probe.Report { return r.Probe },
		text:    writeProbeReport,
		progress: func(e probe.Event) string {
			switch e.Data.(type) {
			case probe.Verdict, natclass.Prediction, probe.PairingCode:
				return "" // the report prints the verdict and techniques; printCode the code
			}
			return e.Message
		},
	})
	return probeExit(rep, err)
}

// probeRuns runs the probe; each call after the first is a rerun from the
// TUI, which cannot reuse the first run's code (the server keeps a
// finished pairing until it expires), so rerun k meets on
// roundCode(code, -k): pressing r on both hosts pairs them again without
// a new code to carry. Negative numbers keep these apart from
// --interval's time slots.
func probeRuns(opts probe.Options) func(context.Context, func(probe.Event)) (*probe.Report, error) {
	var mu sync.Mutex // the first run's code, learned from the server
	base := opts.Code
	attempt := 0
	return func(ctx context.Context, emit func(probe.Event)) (*probe.Report, error) {
		mu.Lock()
		attempt++
		ro := opts
		if attempt > 1 && base != "" {
			ro.Mode, ro.Code = rendezvous.Meet, roundCode(base, -int64(attempt))
		}
		mu.Unlock()
		ro.Events = func(e probe.Event) {
			if c, ok := e.Data.(probe.PairingCode); ok {
				mu.Lock()
				if base == "" {
					base = c.Code
				}
				mu.Unlock()
			}
			emit(e)
		}
		return probe.Run(ctx, ro)
	}
}

// probeExit maps a probe's outcome to the documented exit status: one
// place, so the text, JSON and TUI views agree.
func probeExit(rep *probe.Report, err error) error {
	switch {
	case errors.Is(err, probe.ErrNoPath):
		return &ExitError{Code: ExitNoPath, Err: err}
	case err != nil:
		return err
	case rep == nil || !rep.Verdict.Direct:
		return &ExitError{Code: ExitRelay}
	}
	return nil
}

// runProbeInterval probes once per interval until ctx ends, one JSON line
// per round. Pairing: a code is usable once (the server keeps a finished
// pairing until it expires), so round k meets on roundCode(code, slot k),
// where slot k is the k-th interval since the Unix epoch; both hosts
// derive the same code without talking, and a host that starts late or
// misses a round meets its peer in the next slot.
func runProbeInterval(ctx context.Context, o *ProbeOptions, opts probe.Options) error {
	base := opts.Code
	if base == "" {
		var err error
		if base, err = rendezvous.NewCode(); err != nil {
			return err
		}
		printCode(o.IO.ErrOut, o, base)
	}
	var pm *metrics.Probe
	if o.Metrics != "" {
		reg := metrics.NewRegistry()
		pm = metrics.NewProbe(reg)
		ms, err := metrics.Listen(o.Metrics, reg)
		if err != nil {
			return err
		}
		defer ms.Close()
		fmt.Fprintf(o.IO.ErrOut, "serving metrics on %s\n", ms.URL())
	}
	var mu sync.Mutex
	if o.Output.Events {
		write := eventWriter(o.IO.Out)
		opts.Events = func(e probe.Event) {
			mu.Lock()
			defer mu.Unlock()
			write(e)
		}
	}
	for round := 1; ; round++ {
		slot, end := intervalSlot(time.Now(), o.Interval)
		if time.Until(end) < minPairWindow {
			// Too little of this slot is left to pair in: use the next.
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Until(end)):
			}
			slot, end = intervalSlot(end, o.Interval)
		}
		ro := opts
		ro.Mode, ro.Code = rendezvous.Meet, roundCode(base, slot)
		// Pairing gives up when the slot ends: the peer is then in the
		// next one.
		ro.PairTimeout = min(o.PairTimeout, time.Until(end))
		rep, err := probe.Run(ctx, ro)
		if ctx.Err() != nil {
			return nil // interrupted: a clean stop
		}
		if err != nil {
			fmt.Fprintf(o.IO.ErrOut, "round %d: %v\n", round, err)
			if pm != nil {
				pm.ObserveError()
			}
			// The line of a round without a report, so that a script
			// reading the stream sees every round.
			mu.Lock()
			werr := writeJSONLine(o.IO.Out, roundFailure(round, err))
			mu.Unlock()
			if werr != nil {
				return werr
			}
		} else {
			mu.Lock()
			werr := writeJSONLine(o.IO.Out, rep)
			mu.Unlock()
			if werr != nil {
				return werr
			}
			if pm != nil {
				pm.Observe(rep)
			}
		}
		// The next round starts at the next slot boundary after this one.
		_, next := intervalSlot(time.Now(), o.Interval)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Until(next)):
		}
	}
}

// intervalSlot is the number of the interval-long slot t is in, counted
// from the Unix epoch so both hosts agree, and when it ends.
func intervalSlot(t time.Time, interval time.Duration) (slot int64, end time.Time) {
	slot = t.UnixNano() / int64(interval)
	return slot, time.Unix(0, (slot+1)*int64(interval))
}

// roundCode derives the pairing code of one slot from the code both hosts
// were given: keyed by it, so only they can find the round's pairing.
func roundCode(base string, slot int64) string {
	norm, err := rendezvous.NormalizeCode(base)
	if err != nil {
		norm = base // validated by the flags; keep going rather than panic
	}
	sum := sha256.Sum256([]byte(fmt.Sprintf("natlab round code\x00%s\x00%d", norm, slot)))
	s := strings.ToLower(base32.StdEncoding.EncodeToString(sum[:10])) // 10 bytes: 16 characters, no padding
	return s[0:4] + "-" + s[4:8] + "-" + s[8:12] + "-" + s[12:16]
}

func writeProbeReport(w io.Writer, r *probe.Report) error {
	fmt.Fprintf(w, "%s\n\n", strings.Join(wrap(r.Verdict.Summary, textWidth), "\n"))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "this host (%s)\t%s\t%s %s\t%s\n", r.Side, r.Self.NATType, r.Self.Mapping.Abbrev("M"), r.Self.Filtering.Abbrev("F"), orDash(r.Self.MappedAddress))
	fmt.Fprintf(tw, "  TCP\t\t%s\t%s\n", r.Self.TCP.Brief(), orDash(tcpMapped(r.Self.TCP)))
	fmt.Fprintf(tw, "peer\t%s\t%s %s\t%s\n", r.Peer.NATType, r.Peer.Mapping.Abbrev("M"), r.Peer.Filtering.Abbrev("F"), orDash(r.Peer.Mapped))
	fmt.Fprintf(tw, "  TCP\t\t%s\t%s\n", r.Peer.TCPProfile.Brief(), orDash(peerTCPMapped(r.Peer.TCPProfile)))
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	if p := r.Self; p.NAT64Prefix != "" {
		// An IPv6-only host: its IPv4 profile is the NAT64's IPv4 side.
		writeWrapped(w, "", fmt.Sprintf("this host is IPv6-only: its IPv4 goes through NAT64 %s", p.NAT64Prefix))
	}
	fmt.Fprintln(w)
	if err := writeTechniques(w, r.Techniques); err != nil {
		return err
	}
	return writeIPv6Stage(w, r.IPv6)
}

// writeIPv6Stage is the IPv6 side of a probe (--server6): both sides'
// IPv6 profiles, then the IPv6 techniques, predicted from those profiles
// and measured, as the IPv4 table is; a result without rows (a peer
// before the IPv6 plan) is one line. Fits textWidth.
func writeIPv6Stage(w io.Writer, f *probe.FamilyResult) error {
	if f == nil {
		return nil
	}
	if len(f.Techniques) == 0 {
		line := fmt.Sprintf("udp over IPv6: %s", f.Measured)
		if f.Measured == natclass.Success {
			line += fmt.Sprintf(", first packet %.1f ms, rtt %.2f ms, peer %s", f.TimeToFirstPacketMillis, f.RTTMillis, f.Remote)
		} else if f.Error != "" {
			line += " (" + f.Error + ")"
		}
		_, err := fmt.Fprintf(w, "\n%s\n", strings.Join(wrap(line, textWidth), "\n"))
		return err
	}
	fmt.Fprintln(w, "\nIPv6")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	var mapped []string
	if p := f.Self; p != nil {
		fmt.Fprintf(tw, "this host\t%s\t%s %s, TCP %s\n", p.NATType, p.Mapping.Abbrev("M"), p.Filtering.Abbrev("F"), p.TCP.Brief())
		mapped = append(mapped, fmt.Sprintf("  this host mapped %s (translation %s)", orDash(p.MappedAddress), orDash(p.Translation)))
	}
	if p := f.Peer; p != nil {
		fmt.Fprintf(tw, "peer\t%s\t%s %s, TCP %s\n", p.NATType, p.Mapping.Abbrev("M"), p.Filtering.Abbrev("F"), p.TCPProfile.Brief())
		mapped = append(mapped, "  peer mapped "+orDash(p.Mapped))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	fmt.Fprintf(w, "%s\n\n", strings.Join(mapped, "\n"))
	return writeTechniques(w, f.Techniques)
}

// textWidth is what plain-text reports fit in: a default terminal.
const textWidth = 80

// writeTechniques prints the technique table in textWidth columns: one
// row of figures per technique, and why it was predicted or measured so
// on indented lines below it.
func writeTechniques(w io.Writer, ts []probe.TechniqueResult) error {
	// The rows are aligned on their own, then each gets its reason below.
	var rows bytes.Buffer
	tw := tabwriter.NewWriter(&rows, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "technique\tpredicted\tmeasured\ttries\tfirst packet\trtt")
	for _, t := range ts {
		first, rtt := "-", "-"
		if t.Measured == natclass.Success {
			rtt = fmt.Sprintf("%.2f ms", t.RTTMillis)
			if t.TimeToFirstPacketMillis > 0 {
				first = fmt.Sprintf("%.1f ms", t.TimeToFirstPacketMillis)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", t.Technique, t.Predicted, t.Measured, t.Attempts, first, rtt)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	lines := strings.Split(strings.TrimSuffix(rows.String(), "\n"), "\n")
	fmt.Fprintln(w, strings.TrimRight(lines[0], " "))
	for i, t := range ts {
		fmt.Fprintln(w, strings.TrimRight(lines[i+1], " "))
		why := t.Reason
		if t.Error != "" && t.Measured != t.Predicted {
			why = t.Error
		}
		for _, l := range wrap(why, textWidth-4) {
			fmt.Fprintf(w, "    %s\n", l)
		}
	}
	return nil
}

// wrap breaks s into lines of at most width columns at spaces (a word
// longer than width gets a line of its own).
func wrap(s string, width int) []string {
	var lines []string
	line := ""
	for _, word := range strings.Fields(s) {
		switch {
		case line == "":
			line = word
		case len(line)+1+len(word) <= width:
			line += " " + word
		default:
			lines = append(lines, line)
			line = word
		}
	}
	if line != "" {
		lines = append(lines, line)
	}
	return lines
}

func tcpMapped(t *natclass.TCPProfile) string {
	if t == nil {
		return ""
	}
	return t.MappedAddress
}

func peerTCPMapped(t *natclass.TCPSummary) string {
	if t == nil {
		return ""
	}
	return t.Mapped
}

// ProbeRoundSchema versions the line of an --interval round that has no
// report.
const ProbeRoundSchema = "natlab.probe-round/v1"

// roundLine is the JSON line of an --interval round without a report.
type roundLine struct {
	Schema string `json:"schema"` // ProbeRoundSchema
	Round  int    `json:"round"`
	// Result is "no-peer" (nobody joined within the slot) or "error".
	Result string    `json:"result"`
	Error  string    `json:"error"`
	Time   time.Time `json:"time"`
}

func roundFailure(round int, err error) roundLine {
	r := roundLine{Schema: ProbeRoundSchema, Round: round, Result: "error", Error: err.Error(), Time: time.Now()}
	if errors.Is(err, probe.ErrNoPeer) {
		r.Result = "no-peer"
	}
	return r
}
