package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/natlab/natlab/lab"
	"github.com/natlab/natlab/testnet"
)

// LabUpOptions are the flags of `natlab lab up` (and of the hidden
// `natlab lab hold` it starts).
type LabUpOptions struct {
	IO     IOStreams
	Output outputFlags
	NATA   string
	NATB   string
	Kernel bool
	Shape  linkFlags
}

// linkFlags shape each site's link to the internet (both lab backends).
type linkFlags struct {
	Delay time.Duration
	Loss  float64
}

func addLinkFlags(c *cobra.Command, l *linkFlags) {
	c.Flags().DurationVar(&l.Delay, "delay", 0, "one-way delay of each site's link to the internet (e.g. 25ms: 50 ms RTT between a host and the server, 100 ms between the hosts)")
	c.Flags().Float64Var(&l.Loss, "loss", 0, "packet loss of each site's link to the internet, each way (0 to 0.5)")
}

func (l linkFlags) check() error {
	if l.Delay < 0 || l.Delay > 5*time.Second {
		return flagErrorf("--delay %v: want 0 to 5s", l.Delay)
	}
	if l.Loss < 0 || l.Loss > 0.5 {
		return flagErrorf("--loss %v: want 0 to 0.5", l.Loss)
	}
	return nil
}

// labTopology is sites a and b behind the presets, each link shaped by l.
func labTopology(a, b string, l linkFlags) (testnet.Topology, error) {
	t, err := testnet.PairTopology(a, b)
	if err != nil {
		return t, err
	}
	for i := range t.Sites {
		t.Sites[i].WAN = testnet.Link{Delay: l.Delay, Loss: l.Loss}
	}
	return t, nil
}

// checkPresets checks --nat-a (required) and --nat-b (may be empty).
func checkPresets(a, b string) error {
	for _, p := range []struct{ flag, v string }{{"--nat-a", a}, {"--nat-b", b}} {
		if p.v == "" && p.flag == "--nat-b" {
			continue
		}
		if _, err := testnet.Preset(p.v); err != nil {
			return flagErrorf("%s: %v", p.flag, err)
		}
	}
	return nil
}

func newCmdLabUp(s IOStreams) *cobra.Command {
	o := &LabUpOptions{IO: s}
	c := &cobra.Command{
		Use:   "up --kernel [--nat-a PRESET] [--nat-b PRESET] [--delay D] [--loss P]",
		Short: "Build a kernel lab that stays up, with natlab serve in it, for your own programs",
		Long: `Build a kernel lab (Linux network namespaces, real nftables NAT) with natlab's
server (STUN, rendezvous, TURN) running in it, print its name and addresses,
and return. The lab stays up, held by a background natlab process, until
'natlab lab down NAME'. Run any program on one of its hosts with
'natlab lab exec NAME a|b|server -- CMD...'.

Only the kernel backend: an in-process lab lives inside one process and
cannot outlive the command.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if !o.Kernel {
				return flagErrorf("lab up needs --kernel: an in-process lab lives inside one process and cannot outlive the command")
			}
			if err := checkPresets(o.NATA, o.NATB); err != nil {
				return err
			}
			if err := o.Shape.check(); err != nil {
				return err
			}
			return runLabUp(c.Context(), o)
		},
	}
	addLabUpFlags(c, o)
	addOutputFlags(c, &o.Output)
	return c
}

func addLabUpFlags(c *cobra.Command, o *LabUpOptions) {
	c.Flags().StringVar(&o.NATA, "nat-a", defaultNATA, "NAT preset of site A")
	c.Flags().StringVar(&o.NATB, "nat-b", defaultNATB, "NAT preset of site B (\"\" for one site only)")
	c.Flags().BoolVar(&o.Kernel, "kernel", false, "use Linux network namespaces and nftables (required)")
	addLinkFlags(c, &o.Shape)
}

func runLabUp(ctx context.Context, o *LabUpOptions) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find natlab's own executable: %w", err)
	}
	argv := []string{exe, "lab", "hold", "--nat-a", o.NATA, "--nat-b", o.NATB,
		"--delay", o.Shape.Delay.String(), "--loss", fmt.Sprint(o.Shape.Loss)}
	st, err := lab.Up(ctx, argv)
	if err != nil {
		return err
	}
	return report(o.IO.Out, o.Output, st, func(w io.Writer) error { return writeLabUp(w, st) })
}

func writeLabUp(w io.Writer, st lab.State) error {
	fmt.Fprintf(w, "lab %s is up (%s), natlab serve at %s\n\n", st.Name, st.Backend, strings.Join(st.Server, " "))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "host\tpreset\taddress\tpublic\tlink")
	fmt.Fprintf(tw, "server\t-\t%s\t%s\t-\n", hostOf(st.Server[0]), hostOf(st.Server[0]))
	for _, s := range st.Sites {
		link := "LAN-scale"
		if s.DelayMS > 0 || s.Loss > 0 {
			link = fmt.Sprintf("%.0f ms one way, %.0f%% loss", s.DelayMS, 100*s.Loss)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.Name, s.Preset, s.Host, s.Public, link)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nrun a program on a host:  natlab lab exec %s a -- CMD...\n", st.Name)
	fmt.Fprintf(w, "remove the lab:           natlab lab down %s\n", st.Name)
	return nil
}

func hostOf(hostport string) string {
	h, _, _ := strings.Cut(hostport, ":")
	return h
}

// newCmdLabHold is the process `lab up` leaves running: it holds the lab
// until SIGTERM (from `lab down`).
func newCmdLabHold(s IOStreams) *cobra.Command {
	o := &LabUpOptions{IO: s, Kernel: true}
	c := &cobra.Command{
		Use:    "hold",
		Short:  "Hold a kernel lab until terminated (started by 'natlab lab up')",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			topo, err := labTopology(o.NATA, o.NATB, o.Shape)
			if err == nil {
				err = lab.Hold(c.Context(), lab.HoldOptions{Topology: topo}, lab.WriteReady(s.Out))
			}
			if err != nil {
				lab.WriteFailed(s.Out, err)
			}
			return err
		},
	}
	addLabUpFlags(c, o)
	return c
}

func newCmdLabDown(s IOStreams) *cobra.Command {
	c := &cobra.Command{
		Use:   "down NAME",
		Short: "Remove a lab built by 'natlab lab up'",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if err := testnet.CheckID(args[0]); err != nil {
				return &FlagError{err}
			}
			if err := lab.Down(c.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(s.Out, "lab %s removed\n", args[0])
			return nil
		},
	}
	return c
}

func newCmdLabExec(s IOStreams) *cobra.Command {
	c := &cobra.Command{
		Use:   "exec NAME a|b|server -- CMD [ARG...]",
		Short: "Run a program on a host of a lab built by 'natlab lab up'",
		Long: `Run CMD inside the network namespace of one host of the lab: a or b (the
hosts behind the NATs) or server (where natlab serve runs). Its exit status
is natlab's.`,
		Args: cobra.MinimumNArgs(3),
		RunE: func(c *cobra.Command, args []string) error {
			if err := testnet.CheckID(args[0]); err != nil {
				return &FlagError{err}
			}
			argv := args[2:]
			if argv[0] == "--" { // kept by cobra when flags stop at the first argument
				argv = argv[1:]
			}
			if len(argv) == 0 {
				return flagErrorf("no program to run: natlab lab exec NAME HOST -- CMD [ARG...]")
			}
			cmd, err := lab.ExecCommand(c.Context(), args[0], args[1], argv)
			if err != nil {
				return err
			}
			cmd.Stdin, cmd.Stdout, cmd.Stderr = s.In, s.Out, s.ErrOut
			err = cmd.Run()
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return &ExitError{Code: max(ee.ExitCode(), 1)} // -1: killed by a signal
			}
			return err
		},
	}
	// Everything after the host is the program's: its flags are not ours.
	c.Flags().SetInterspersed(false)
	return c
}
