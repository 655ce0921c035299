package cmd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/pion/transport/v4"
	"github.com/pion/transport/v4/stdnet"
	"github.com/spf13/cobra"

	"github.com/natlab/natlab/internal/buildinfo"
	"github.com/natlab/natlab/rendezvous"
	"github.com/natlab/natlab/server"
)

func init() { subcommandFns = append(subcommandFns, newCmdServe) }

// ServeOptions are the flags and dependencies of `natlab serve`.
type ServeOptions struct {
	IO     IOStreams
	Output outputFlags
	// Listen holds one IP:PORT per address family served; AltIP the
	// alternate IPs, matched to Listen by family.
	Listen  []string
	AltIP   []string
	AltPort uint16
	// Net opens the sockets; nil means the host's stack.
	Net transport.Net
	// Ready, if set, is called once the server listens (tests use it to
	// learn the chosen ports).
	Ready func(*server.Server) // called once per family, in --listen order

	// TURN flags; TURN is served when Users or AuthSecret(File) is set.
	Users          string
	AuthSecret     string
	AuthSecretFile string
	Realm          string
	UserQuota      int
	AllowPeers     []string
	RelayIP        []string // one per family at most
	TLSListen      string
	TLSCert        string
	TLSKey         string
	// Metrics is the host:port to serve Prometheus metrics on; "" for none.
	Metrics string
	// Limits are the per-source limits (cmd/serve_limits.go).
	Limits serveLimits
	// TCPOptional serves without TCP when its port cannot be opened
	// (by default that fails the start-up).
	TCPOptional bool
	// LogLevel and LogFormat configure the operator's log on stderr.
	LogLevel  string
	LogFormat string
}

func newCmdServe(s IOStreams) *cobra.Command {
	return NewCmdServe(s, nil)
}

// NewCmdServe builds `natlab serve`; runF replaces the run function in
// tests that only check flag parsing.
func NewCmdServe(s IOStreams, runF func(context.Context, *ServeOptions) error) *cobra.Command {
	o := &ServeOptions{IO: s}
	c := &cobra.Command{
		Use:   "serve --listen IP:PORT [--listen [IPv6]:PORT] [--alt-ip IP]... [--alt-port N] [--users FILE | --auth-secret-file FILE]",
		Short: "Run the RFC 5780 STUN server and TURN relay (the public side of natlab)",
		Long: `Serve STUN Binding requests with RFC 5780 NAT behaviour discovery.

With a second address (--alt-ip) and port (--alt-port) the server listens on
four sockets and supports every RFC 5780 test; with fewer it still answers
Binding requests and says which tests clients cannot run. Binding over TCP is
served on the primary address as well. Runs until interrupted.

Dual stack: give --listen once per family (an IPv4 and an IPv6 address) and
--alt-ip once per family; each family gets its own four sockets, and TURN
clients get relayed addresses of the family they reach the server over
(REQUESTED-ADDRESS-FAMILY for the other family is answered 440).

With --users (user:password lines) or --auth-secret(-file) (TURN REST API
ephemeral credentials, as coturn's use-auth-secret) the same UDP sockets and
TCP port also serve a TURN relay: Binding requests stay with the RFC 5780
server, other STUN methods and ChannelData go to TURN. --tls-listen adds TURN
over TLS (with --tls-cert/--tls-key, or a generated self-signed certificate).
Relaying to loopback, private, link-local, CGNAT, multicast, documentation
and the server's own addresses is refused; --allow-peer opens a range.
--users and a shared secret may be combined: a username from the users file
is checked against its password, any other against the secret. Keep the
secret off the command line: --auth-secret-file, or $NATLAB_AUTH_SECRET.

If a socket cannot be opened (a UDP port, the TCP port, --tls-listen,
--metrics) serve fails at start-up with exit 1; --tcp-optional serves
without TCP instead. Logs go to stderr (--log-level, --log-format text|json):
start-up, each pairing (its code hashed, never in clear), TURN allocations,
and refusals: quota, peer policy, authentication failures, connection and
connect-back limits (each kind at most once per 10 s, with a count).`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if len(o.Listen) == 0 {
				return flagErrorf("--listen IP:PORT is required")
			}
			if _, err := newServeLogger(o); err != nil {
				return err
			}
			if err := o.resolveSecret(); err != nil {
				return err
			}
			if runF != nil {
				return runF(c.Context(), o)
			}
			return runServe(c.Context(), o)
		},
	}
	c.Flags().StringArrayVar(&o.Listen, "listen", nil, "primary address IP1:P1 to serve on (port 0 picks one); once per family for dual stack")
	c.Flags().StringArrayVar(&o.AltIP, "alt-ip", nil, "alternate IP address IP2 of this host (RFC 5780 needs one); once per family")
	c.Flags().Uint16Var(&o.AltPort, "alt-port", 0, "alternate port P2 (default: the primary port + 1 when --alt-ip is set)")
	f := c.Flags()
	f.StringVar(&o.Users, "users", "", "TURN long-term credentials file, one user:password per line")
	f.StringVar(&o.AuthSecret, "auth-secret", "", "TURN REST API shared secret (coturn's static-auth-secret; visible in ps, prefer --auth-secret-file)")
	f.StringVar(&o.AuthSecretFile, "auth-secret-file", "", "file whose first line is the TURN REST API shared secret")
	f.StringVar(&o.Realm, "realm", server.DefaultRealm, "TURN realm")
	f.IntVar(&o.UserQuota, "user-quota", server.DefaultUserQuota, "concurrent TURN allocations per user (0: unlimited)")
	f.StringArrayVar(&o.AllowPeers, "allow-peer", nil, "CIDR the relay may reach although refused by default (repeatable; the lab uses 198.51.100.0/24 and 203.0.113.0/24)")
	f.StringArrayVar(&o.RelayIP, "relay-ip", nil, "relayed address given to TURN clients (default: the --listen IP of its family); once per family")
	f.StringVar(&o.TLSListen, "tls-listen", "", "also serve TURN over TLS on IP:PORT (5349 is the standard port, 443 passes most firewalls)")
	f.StringVar(&o.TLSCert, "tls-cert", "", "PEM certificate for --tls-listen (default: a generated self-signed one)")
	f.StringVar(&o.TLSKey, "tls-key", "", "PEM private key for --tls-cert")
	f.StringVar(&o.Metrics, "metrics", "", "serve Prometheus metrics on HOST:PORT at /metrics")
	addLimitFlags(f, &o.Limits)
	f.BoolVar(&o.TCPOptional, "tcp-optional", false, "serve without TCP if its port cannot be opened (default: fail at start-up)")
	f.StringVar(&o.LogLevel, "log-level", "info", "log level on stderr: debug, info, warn, error")
	f.StringVar(&o.LogFormat, "log-format", "text", "log format on stderr: text or json (one object per line)")
	addOutputFlags(c, &o.Output)
	return c
}

// resolveSecret reads the TURN REST API secret from --auth-secret-file
// or $NATLAB_AUTH_SECRET into AuthSecret.
func (o *ServeOptions) resolveSecret() error {
	s, err := secretSource{"--auth-secret", o.AuthSecret, "--auth-secret-file", o.AuthSecretFile, EnvAuthSecret}.resolve()
	o.AuthSecret, o.AuthSecretFile = s, ""
	return err
}

// turnEnabled reports whether any credential source was given.
func (o *ServeOptions) turnEnabled() bool {
	return o.Users != "" || o.AuthSecret != "" || o.AuthSecretFile != ""
}

// parseTURN turns the TURN flags into a configuration; nil without
// credentials. primary is the --listen IP.
func parseTURN(o *ServeOptions, primary netip.Addr) (*server.TURNConfig, error) {
	if !o.turnEnabled() {
		for _, f := range []struct {
			name string
			set  bool
		}{
			{"--tls-listen", o.TLSListen != ""}, {"--tls-cert", o.TLSCert != ""}, {"--tls-key", o.TLSKey != ""},
			{"--relay-ip", len(o.RelayIP) > 0}, {"--allow-peer", len(o.AllowPeers) > 0},
		} {
			if f.set {
				return nil, flagErrorf("%s needs TURN credentials (--users or --auth-secret-file)", f.name)
			}
		}
		return nil, nil
	}
	tc := &server.TURNConfig{Realm: o.Realm, UserQuota: o.UserQuota}
	switch {
	case o.UserQuota == 0:
		tc.UserQuota = -1
	case o.UserQuota < 0:
		return nil, flagErrorf("--user-quota %d: want 0 (unlimited) or more", o.UserQuota)
	}
	if o.Realm == "" {
		return nil, flagErrorf("--realm must not be empty")
	}
	if o.Users != "" {
		f, err := os.Open(o.Users)
		if err != nil {
			return nil, flagErrorf("--users: %v", err)
		}
		users, err := server.ParseUsers(f)
		_ = f.Close()
		if err != nil {
			return nil, flagErrorf("--users %s: %v", o.Users, err)
		}
		if len(users) == 0 {
			return nil, flagErrorf("--users %s: no user:password lines", o.Users)
		}
		tc.Users = users
	}
	tc.Secret = o.AuthSecret // resolved from its file or variable by resolveSecret
	for _, cidr := range o.AllowPeers {
		p, err := netip.ParsePrefix(cidr)
		if err != nil {
			ip, ierr := netip.ParseAddr(cidr)
			if ierr != nil {
				return nil, flagErrorf("--allow-peer %q: want a CIDR such as 203.0.113.0/24", cidr)
			}
			p = netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen())
		}
		tc.Peers.Allow = append(tc.Peers.Allow, p.Masked())
	}
	for _, r := range o.RelayIP {
		ip, err := netip.ParseAddr(r)
		if err != nil || ip.IsUnspecified() {
			return nil, flagErrorf("--relay-ip %q: want a specific IP address", r)
		}
		if ip.Unmap().Is4() == primary.Is4() {
			tc.RelayIP = ip.Unmap()
		}
	}
	if !tc.RelayIP.IsValid() && primary.IsUnspecified() {
		return nil, flagErrorf("--relay-ip is needed when --listen is %s: TURN clients must be told a reachable relayed address", primary)
	}
	if o.TLSListen == "" {
		if o.TLSCert != "" || o.TLSKey != "" {
			return nil, flagErrorf("--tls-cert and --tls-key need --tls-listen")
		}
		return tc, nil
	}
	ap, err := netip.ParseAddrPort(o.TLSListen)
	if err != nil {
		return nil, flagErrorf("--tls-listen %q: want IP:PORT with a literal IP: %v", o.TLSListen, err)
	}
	tc.TLSAddr = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	if tc.TLSAddr.Addr().Is4() != primary.Is4() {
		return tc, nil // the server of the --tls-listen family serves TLS
	}
	var cert tls.Certificate
	switch {
	case (o.TLSCert == "") != (o.TLSKey == ""):
		return nil, flagErrorf("--tls-cert and --tls-key go together")
	case o.TLSCert != "":
		if cert, err = tls.LoadX509KeyPair(o.TLSCert, o.TLSKey); err != nil {
			return nil, flagErrorf("--tls-cert/--tls-key: %v", err)
		}
	default:
		if cert, err = server.SelfSignedCert("natlab", []netip.Addr{primary, tc.RelayIP, tc.TLSAddr.Addr()}); err != nil {
			return nil, fmt.Errorf("TLS: %w", err)
		}
	}
	tc.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	return tc, nil
}

// serveStatus is the --json start-up line of `natlab serve`.
type serveStatus struct {
	Schema        string      `json:"schema"`                // "natlab.serve/v1"
	NatlabVersion string      `json:"natlab_version"`        // the build that wrote it
	Listening     []string    `json:"listening"`             // UDP sockets served
	TCP           string      `json:"tcp,omitempty"`         // TCP address served, if any
	TCPError      string      `json:"tcp_error,omitempty"`   // why TCP is not served
	RFC5780       bool        `json:"rfc5780"`               // every RFC 5780 test is supported
	Unsupported   []string    `json:"unsupported,omitempty"` // tests clients cannot run here
	TURN          *turnStatus `json:"turn,omitempty"`        // the relay, when served
	// Families is each family's sockets when serving more than one
	// (dual stack); the fields above are then the first --listen's.
	Families []familyServeStatus `json:"families,omitempty"`
}

// turnStatus describes the TURN relay in the start-up line.
type turnStatus struct {
	Realm         string   `json:"realm"`
	Listening     []string `json:"listening"`               // "udp IP:PORT", "tcp IP:PORT", "tls IP:PORT"
	LongTerm      bool     `json:"long_term"`               // a users file is loaded
	Ephemeral     bool     `json:"ephemeral"`               // TURN REST API secret accepted
	UserQuota     int      `json:"user_quota"`              // 0: unlimited
	AllowedPeers  []string `json:"allowed_peers,omitempty"` // ranges opened with --allow-peer
	TLSSelfSigned bool     `json:"tls_self_signed,omitempty"`
}

// parseServeAddrs turns the flags into one address plan per family, in
// --listen order.
func parseServeAddrs(o *ServeOptions) ([]server.Addrs, error) {
	var plans []server.Addrs
	for _, l := range o.Listen {
		ap, err := parseListen("--listen", l)
		if err != nil {
			return nil, err
		}
		a := server.Addrs{Primary: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), AltPort: o.AltPort}
		for _, p := range plans {
			if p.Primary.Addr().Is4() == a.Primary.Addr().Is4() {
				return nil, flagErrorf("--listen %s: one address per family (%s is already %s)", l, family(a.Primary.Addr()), p.Primary)
			}
		}
		if a.AltPort != 0 && a.AltPort == a.Primary.Port() {
			return nil, flagErrorf("--alt-port %d: must differ from the --listen port", a.AltPort)
		}
		plans = append(plans, a)
	}
	for _, s := range o.AltIP {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return nil, flagErrorf("--alt-ip %q: not an IP address", s)
		}
		ip = ip.Unmap()
		i := slices.IndexFunc(plans, func(p server.Addrs) bool { return p.Primary.Addr().Is4() == ip.Is4() })
		switch {
		case i < 0:
			return nil, flagErrorf("--alt-ip %s: no --listen address of the same family", ip)
		case plans[i].AltIP.IsValid():
			return nil, flagErrorf("--alt-ip %s: one per family (%s is already %s)", ip, family(ip), plans[i].AltIP)
		case ip == plans[i].Primary.Addr():
			return nil, flagErrorf("--alt-ip %s: must differ from the --listen IP", ip)
		}
		plans[i].AltIP = ip
	}
	for i, a := range plans {
		if a.AltPort == 0 && a.AltIP.IsValid() && a.Primary.Port() != 0 && a.Primary.Port() < 65535 {
			plans[i].AltPort = a.Primary.Port() + 1
		}
	}
	return plans, nil
}

// family names ip's address family for messages.
func family(ip netip.Addr) string {
	if ip.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

func runServe(ctx context.Context, o *ServeOptions) error {
	plans, err := parseServeAddrs(o)
	if err != nil {
		return err
	}
	tcs := make([]*server.TURNConfig, len(plans))
	tlsServed := false
	for i, a := range plans {
		if tcs[i], err = parseTURN(o, a.Primary.Addr()); err != nil {
			return err
		}
		tlsServed = tlsServed || (tcs[i] != nil && tcs[i].TLS != nil)
	}
	if o.TLSListen != "" && !tlsServed {
		return flagErrorf("--tls-listen %s: no --listen address of the same family", o.TLSListen)
	}
	n := o.Net
	if n == nil {
		if n, err = stdnet.NewNet(); err != nil {
			return fmt.Errorf("network stack: %w", err)
		}
	}
	logger, err := newServeLogger(o)
	if err != nil {
		return err
	}
	if err := o.Limits.check(); err != nil {
		return err
	}
	rz := rendezvous.NewRegistryLimits(nil, o.Limits.rendezvous())
	rz.SetLogger(logger)
	defer rz.Close()
	g := &server.Group{}
	for i, a := range plans {
		srv, err := server.Listen(n, server.Config{Addrs: a, Logger: logger, Rendezvous: rz, TURN: tcs[i], Limits: o.Limits.server(), RequireTCP: !o.TCPOptional})
		if err != nil {
			_ = g.Close()
			if errors.Is(err, server.ErrTCPUnavailable) {
				return fmt.Errorf("%w (--tcp-optional serves without TCP)", err)
			}
			return err
		}
		g.Servers = append(g.Servers, srv)
	}
	stopMetrics, err := startServeMetrics(o.IO, o.Metrics, g, rz)
	if err != nil {
		_ = g.Close()
		return err
	}
	defer stopMetrics()
	st := startStatus(o, g, tcs)
	if o.Output.JSON {
		err = writeJSONLine(o.IO.Out, st) // one line, for log collectors
	} else {
		err = writeServeStatus(o.IO.Out, st)
	}
	if err != nil {
		_ = g.Close()
		return err
	}
	if o.Ready != nil {
		for _, srv := range g.Servers {
			o.Ready(srv)
		}
	}
	return g.Serve(ctx)
}

// familyServeStatus is one family's sockets; the top level of serveStatus
// describes the first --listen family (as before dual stack), and
// families lists each when more than one is served.
type familyServeStatus struct {
	Family      string   `json:"family"` // "ipv4" or "ipv6"
	Listening   []string `json:"listening"`
	TCP         string   `json:"tcp,omitempty"`
	TCPError    string   `json:"tcp_error,omitempty"`
	RFC5780     bool     `json:"rfc5780"`
	Unsupported []string `json:"unsupported,omitempty"`
}

func familyStatus(srv *server.Server) familyServeStatus {
	a := srv.Addrs()
	f := familyServeStatus{Family: "ipv4", RFC5780: a.Full(), Unsupported: a.Unsupported()}
	if !a.Primary.Addr().Is4() {
		f.Family = "ipv6"
	}
	for _, s := range a.Sockets() {
		f.Listening = append(f.Listening, "udp "+s.String())
	}
	if err := srv.TCPError(); err != nil {
		f.TCPError = err.Error()
	} else {
		f.TCP = a.Primary.String()
	}
	return f
}

// startStatus is what the servers serve, for the start-up line; tcs are
// their TURN configurations (nil without TURN).
func startStatus(o *ServeOptions, g *server.Group, tcs []*server.TURNConfig) serveStatus {
	first := familyStatus(g.Servers[0])
	st := serveStatus{Schema: "natlab.serve/v1", NatlabVersion: buildinfo.Version(), Listening: first.Listening, TCP: first.TCP, TCPError: first.TCPError,
		RFC5780: first.RFC5780, Unsupported: first.Unsupported}
	if len(g.Servers) > 1 {
		for _, srv := range g.Servers {
			st.Families = append(st.Families, familyStatus(srv))
		}
	}
	tc := tcs[0]
	if tc == nil {
		return st
	}
	ts := &turnStatus{Realm: o.Realm, LongTerm: tc.Users != nil, Ephemeral: tc.Secret != "", UserQuota: max(o.UserQuota, 0),
		TLSSelfSigned: o.TLSListen != "" && o.TLSCert == ""}
	for _, srv := range g.Servers {
		f := familyStatus(srv)
		ts.Listening = append(ts.Listening, f.Listening...)
		if f.TCP != "" {
			ts.Listening = append(ts.Listening, "tcp "+f.TCP)
		}
		if ap, ok := srv.TURNTLSAddr(); ok {
			ts.Listening = append(ts.Listening, "tls "+ap.String())
		}
	}
	for _, p := range tc.Peers.Allow {
		ts.AllowedPeers = append(ts.AllowedPeers, p.String())
	}
	st.TURN = ts
	return st
}

// writeServeStatus is the start-up status for people; with more than one
// family each RFC 5780 line names its family.
func writeServeStatus(w io.Writer, st serveStatus) error {
	fams := st.Families
	if len(fams) == 0 {
		fams = []familyServeStatus{{Listening: st.Listening, TCP: st.TCP, TCPError: st.TCPError, RFC5780: st.RFC5780, Unsupported: st.Unsupported}}
	}
	for _, f := range fams {
		in := ""
		if len(st.Families) > 0 {
			in = " (" + strings.Replace(f.Family, "ip", "IP", 1) + ")"
		}
		for _, l := range f.Listening {
			fmt.Fprintf(w, "serving STUN on %s\n", l)
		}
		if f.TCP != "" {
			fmt.Fprintf(w, "serving STUN on tcp %s\n", f.TCP)
		} else {
			fmt.Fprintf(w, "not serving TCP%s: %s\n", in, f.TCPError)
		}
		if f.RFC5780 {
			fmt.Fprintf(w, "RFC 5780%s: every NAT behaviour test is supported\n", in)
		}
		for _, u := range f.Unsupported {
			fmt.Fprintf(w, "RFC 5780%s: cannot support %s\n", in, u)
		}
	}
	if t := st.TURN; t != nil {
		for _, l := range t.Listening {
			fmt.Fprintf(w, "serving TURN on %s (realm %q)\n", l, t.Realm)
		}
		if t.TLSSelfSigned {
			fmt.Fprintln(w, "TURN over TLS uses a generated self-signed certificate")
		}
		if len(t.AllowedPeers) > 0 {
			fmt.Fprintf(w, "TURN may relay to %s (opened with --allow-peer)\n", strings.Join(t.AllowedPeers, ", "))
		}
	}
	return nil
}

// newServeLogger is the operator's log: stderr, at --log-level, as text or
// JSON lines.
func newServeLogger(o *ServeOptions) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.LogLevel)); err != nil {
		return nil, flagErrorf("--log-level %q: want debug, info, warn or error", o.LogLevel)
	}
	ho := &slog.HandlerOptions{Level: level}
	switch o.LogFormat {
	case "text":
		return slog.New(slog.NewTextHandler(o.IO.ErrOut, ho)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(o.IO.ErrOut, ho)), nil
	}
	return nil, flagErrorf("--log-format %q: want text or json", o.LogFormat)
}

// parseListen parses an IP:PORT flag, naming the part that is wrong.
func parseListen(flag, v string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return netip.AddrPort{}, flagErrorf("%s %q: want IP:PORT (e.g. 0.0.0.0:3478)", flag, v)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return netip.AddrPort{}, flagErrorf("%s %q: port %q is not a number in 0-65535", flag, v, port)
	}
	if host == "" {
		return netip.AddrPort{}, flagErrorf("%s %q: give the IP to listen on (0.0.0.0 for every IPv4 address)", flag, v)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, flagErrorf("%s %q: %q is not an IP address (a literal IP is needed: the server tells clients which IP answered)", flag, v, host)
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(p)), nil
}
