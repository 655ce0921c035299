package cmd

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/pion/transport/v4"
	"github.com/pion/transport/v4/stdnet"
	"github.com/spf13/cobra"

	"github.com/natlab/natlab/server"
)

func init() { subcommandFns = append(subcommandFns, newCmdServe) }

// ServeOptions are the flags and dependencies of `natlab serve`.
type ServeOptions struct {
	IO      IOStreams
	Output  outputFlags
	Listen  string
	AltIP   string
	AltPort uint16
	// Net opens the sockets; nil means the host's stack.
	Net transport.Net
	// Ready, if set, is called once the server listens (tests use it to
	// learn the chosen ports).
	Ready func(*server.Server)
}

func newCmdServe(s IOStreams) *cobra.Command {
	return NewCmdServe(s, nil)
}

// NewCmdServe builds `natlab serve`; runF replaces the run function in
// tests that only check flag parsing.
func NewCmdServe(s IOStreams, runF func(context.Context, *ServeOptions) error) *cobra.Command {
	o := &ServeOptions{IO: s}
	c := &cobra.Command{
		Use:   "serve --listen IP:PORT [--alt-ip IP] [--alt-port N]",
		Short: "Run the RFC 5780 STUN server (the public side of natlab)",
		Long: `Serve STUN Binding requests with RFC 5780 NAT behaviour discovery.

With a second address (--alt-ip) and port (--alt-port) the server listens on
four sockets and supports every RFC 5780 test; with fewer it still answers
Binding requests and says which tests clients cannot run. Binding over TCP is
served on the primary address as well. Runs until interrupted.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if o.Listen == "" {
				return flagErrorf("--listen IP:PORT is required")
			}
			if runF != nil {
				return runF(c.Context(), o)
			}
			return runServe(c.Context(), o)
		},
	}
	c.Flags().StringVar(&o.Listen, "listen", "", "primary address IP1:P1 to serve on (port 0 picks one)")
	c.Flags().StringVar(&o.AltIP, "alt-ip", "", "alternate IP address IP2 of this host (RFC 5780 needs one)")
	c.Flags().Uint16Var(&o.AltPort, "alt-port", 0, "alternate port P2 (default: the primary port + 1 when --alt-ip is set)")
	addOutputFlags(c, &o.Output)
	return c
}

// serveStatus is the --json start-up line of `natlab serve`.
type serveStatus struct {
	Schema      string   `json:"schema"`                // "natlab.serve/v1"
	Listening   []string `json:"listening"`             // UDP sockets served
	TCP         string   `json:"tcp,omitempty"`         // TCP address served, if any
	TCPError    string   `json:"tcp_error,omitempty"`   // why TCP is not served
	RFC5780     bool     `json:"rfc5780"`               // every RFC 5780 test is supported
	Unsupported []string `json:"unsupported,omitempty"` // tests clients cannot run here
}

// parseServeAddrs turns the flags into an address plan.
func parseServeAddrs(o *ServeOptions) (server.Addrs, error) {
	var a server.Addrs
	ap, err := netip.ParseAddrPort(o.Listen)
	if err != nil {
		return a, flagErrorf("--listen %q: want IP:PORT with a literal IP: %v", o.Listen, err)
	}
	a.Primary = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	if o.AltIP != "" {
		ip, err := netip.ParseAddr(o.AltIP)
		if err != nil {
			return a, flagErrorf("--alt-ip %q: not an IP address", o.AltIP)
		}
		a.AltIP = ip.Unmap()
		if a.AltIP == a.Primary.Addr() {
			return a, flagErrorf("--alt-ip %s: must differ from the --listen IP", ip)
		}
		if a.AltIP.Is4() != a.Primary.Addr().Is4() {
			return a, flagErrorf("--alt-ip %s: must be of the same family as %s", ip, a.Primary.Addr())
		}
	}
	a.AltPort = o.AltPort
	if a.AltPort != 0 && a.AltPort == a.Primary.Port() {
		return a, flagErrorf("--alt-port %d: must differ from the --listen port", a.AltPort)
	}
	if a.AltPort == 0 && a.AltIP.IsValid() && a.Primary.Port() != 0 && a.Primary.Port() < 65535 {
		a.AltPort = a.Primary.Port() + 1
	}
	return a, nil
}

func runServe(ctx context.Context, o *ServeOptions) error {
	addrs, err := parseServeAddrs(o)
	if err != nil {
		return err
	}
	n := o.Net
	if n == nil {
		if n, err = stdnet.NewNet(); err != nil {
			return fmt.Errorf("network stack: %w", err)
		}
	}
	// Start-up notes (unsupported tests, no TCP) are printed below from
	// the same facts; the log only adds runtime errors.
	logger := slog.New(slog.NewTextHandler(o.IO.ErrOut, &slog.HandlerOptions{Level: slog.LevelError}))
	srv, err := server.Listen(n, server.Config{Addrs: addrs, Logger: logger})
	if err != nil {
		return err
	}
	a := srv.Addrs()
	st := serveStatus{Schema: "natlab.serve/v1", RFC5780: a.Full(), Unsupported: a.Unsupported()}
	for _, s := range a.Sockets() {
		st.Listening = append(st.Listening, "udp "+s.String())
	}
	if err := srv.TCPError(); err != nil {
		st.TCPError = err.Error()
	} else {
		st.TCP = a.Primary.String()
	}
	if o.Output.JSON {
		b, err := json.Marshal(st)
		if err != nil {
			return fmt.Errorf("encode JSON: %w", err)
		}
		fmt.Fprintln(o.IO.Out, string(b))
	} else {
		for _, l := range st.Listening {
			fmt.Fprintf(o.IO.Out, "serving STUN on %s\n", l)
		}
		if st.TCP != "" {
			fmt.Fprintf(o.IO.Out, "serving STUN on tcp %s\n", st.TCP)
		} else {
			fmt.Fprintf(o.IO.Out, "not serving TCP: %s\n", st.TCPError)
		}
		if st.RFC5780 {
			fmt.Fprintln(o.IO.Out, "RFC 5780: every NAT behaviour test is supported")
		}
		for _, u := range st.Unsupported {
			fmt.Fprintf(o.IO.Out, "RFC 5780: cannot support %s\n", u)
		}
	}
	if o.Ready != nil {
		o.Ready(srv)
	}
	return srv.Serve(ctx)
}
