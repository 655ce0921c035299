package cmd

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/transport/v4/stdnet"
	"github.com/spf13/cobra"

	"github.com/natlab/natlab/internal/buildinfo"
	"github.com/natlab/natlab/internal/interop"
	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/relay"
	"github.com/natlab/natlab/server"
)

// serveTimeout bounds waiting for `natlab serve` to start or stop: both
// take milliseconds on loopback.
const serveTimeout = 5 * time.Second

// runServeInProcess starts `natlab serve` with args and returns its address
// plan once it listens; the server stops at the end of the test.
func runServeInProcess(t *testing.T, args ...string) (server.Addrs, string) {
	t.Helper()
	s, out, _ := testStreams()
	ready := make(chan server.Addrs, 2) // one per family
	c := NewCmdServe(s, func(ctx context.Context, o *ServeOptions) error {
		o.Ready = func(srv *server.Server) { ready <- srv.Addrs() }
		return runServe(ctx, o)
	})
	c.SetArgs(args)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.ExecuteContext(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(serveTimeout):
			t.Error("serve did not stop")
		}
	})
	select {
	case a := <-ready:
		return a, out.String()
	case err := <-done:
		t.Fatalf("serve exited: %v", err)
	case <-time.After(serveTimeout):
		t.Fatal("serve did not start")
	}
	return server.Addrs{}, ""
}

func TestServeWithStunClient(t *testing.T) {
	interop.Need(t, interop.StunClientBin)
	interop.NeedLoopback2(t)
	p := interop.FreePortPair(t)
	a, _ := runServeInProcess(t, "--listen", fmt.Sprintf("127.0.0.1:%d", p), "--alt-ip", "127.0.0.2")
	if a.AltPort != p+1 {
		t.Fatalf("alt port %d, want the default %d", a.AltPort, p+1)
	}
	code, out := interop.StunClient(t, a.Primary)
	// stun-client exits with its NAT type code: 1 is "Open" (no NAT).
	if code != 1 || !strings.Contains(out, "Primary: Open") {
		t.Errorf("stun client: exit %d, output:\n%s", code, out)
	}
}

func TestServeWithNATDiscovery(t *testing.T) {
	interop.Need(t, interop.NATDiscoveryBin)
	interop.NeedLoopback2(t)
	p := interop.FreePortPair(t)
	a, _ := runServeInProcess(t, "--listen", fmt.Sprintf("127.0.0.1:%d", p), "--alt-ip", "127.0.0.2", "--alt-port", fmt.Sprint(p+1))
	m, f, out := interop.NATDiscovery(t, a.Primary)
	if m != natclass.EndpointIndependent || f != natclass.EndpointIndependent {
		t.Errorf("natdiscovery says %q/%q, want endpoint-independent for both on loopback:\n%s", m, f, out)
	}
	if strings.Contains(out, "not supported") || strings.Contains(out, "rror") {
		t.Errorf("natdiscovery complained:\n%s", out)
	}
}

func TestServeJSONStatus(t *testing.T) {
	interop.NeedLoopback2(t)
	_, out := runServeInProcess(t, "--listen", "127.0.0.1:0", "--json")
	var st serveStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil || strings.Count(out, "\n") != 1 {
		t.Fatalf("want one JSON line, got %q (%v)", out, err)
	}
	if st.Schema != "natlab.serve/v1" || st.NatlabVersion != buildinfo.Version() || st.RFC5780 || len(st.Unsupported) == 0 || st.TCP == "" || len(st.Listening) != 1 {
		t.Errorf("status %+v", st)
	}
}

func TestServeFlags(t *testing.T) {
	tests := []struct {
		args    []string
		wantErr string
		want    server.Addrs
	}{
		{[]string{"--listen", "127.0.0.1:3478"}, "", server.Addrs{Primary: netip.MustParseAddrPort("127.0.0.1:3478")}},
		{[]string{"--listen", "127.0.0.1:3478", "--alt-ip", "127.0.0.2"}, "",
			server.Addrs{Primary: netip.MustParseAddrPort("127.0.0.1:3478"), AltIP: netip.MustParseAddr("127.0.0.2"), AltPort: 3479}},
		{[]string{"--listen", "127.0.0.1:3478", "--alt-ip", "127.0.0.2", "--alt-port", "4000"}, "",
			server.Addrs{Primary: netip.MustParseAddrPort("127.0.0.1:3478"), AltIP: netip.MustParseAddr("127.0.0.2"), AltPort: 4000}},
		{nil, "--listen IP:PORT is required", server.Addrs{}},
		{[]string{"--listen", "localhost:3478"}, "literal IP", server.Addrs{}},
		{[]string{"--listen", "127.0.0.1:3478", "--alt-ip", "127.0.0.1"}, "must differ", server.Addrs{}},
		{[]string{"--listen", "127.0.0.1:3478", "--alt-ip", "::1"}, "same family", server.Addrs{}},
		{[]string{"--listen", "127.0.0.1:3478", "--alt-port", "3478"}, "must differ", server.Addrs{}},
		{[]string{"--listen", "127.0.0.1:3478", "--alt-port", "70000"}, "invalid argument", server.Addrs{}},
	}
	for _, tt := range tests {
		s, _, _ := testStreams()
		var got server.Addrs
		c := NewCmdServe(s, func(_ context.Context, o *ServeOptions) error {
			plans, err := parseServeAddrs(o)
			if len(plans) > 0 {
				got = plans[0]
			}
			return err
		})
		c.SetArgs(tt.args)
		c.SetOut(s.Out)
		c.SetErr(s.ErrOut)
		c.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &FlagError{err} })
		err := c.Execute()
		if tt.wantErr == "" {
			if err != nil || got != tt.want {
				t.Errorf("%v: %v %+v, want %+v", tt.args, err, got, tt.want)
			}
			continue
		}
		var fe *FlagError
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !asFlagError(err, &fe) {
			t.Errorf("%v: err %v, want a flag error containing %q", tt.args, err, tt.wantErr)
		}
	}
}

// uclientLoss is uclient's summary of what came back.
var uclientLoss = regexp.MustCompile(`Total lost packets \d+ \(([\d.]+)%\)`)

// maxUclientLoss is the loss tolerated from uclient's start-up race (see
// TestServeTURNWithUclient); without -race it loses nothing.
const maxUclientLoss = 30

// uclientTimeout bounds one turnutils_uclient run: 20 messages at its
// 20 ms interval, plus its own start-up and teardown.
const uclientTimeout = 30 * time.Second

// coturn's turnutils_uclient allocates and relays through `natlab serve`
// (two clients relaying to each other's relayed address, -y): long-term
// credentials over UDP, TCP and TLS, and TURN REST API credentials.
func TestServeTURNWithUclient(t *testing.T) {
	bin, err := exec.LookPath("turnutils_uclient")
	if err != nil {
		t.Skip("turnutils_uclient not installed (Debian package coturn)")
	}
	dir := t.TempDir()
	users, secret := filepath.Join(dir, "users"), filepath.Join(dir, "secret")
	if err := os.WriteFile(users, []byte("# test\nalice:wonderland\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(secret, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := interop.FreePortPair(t)
	_, out := runServeInProcess(t, "--listen", fmt.Sprintf("127.0.0.1:%d", p), "--users", users,
		"--auth-secret-file", secret, "--tls-listen", fmt.Sprintf("127.0.0.1:%d", p+1))
	if !strings.Contains(out, "serving TURN on tls") {
		t.Fatalf("serve output:\n%s", out)
	}
	run := func(args ...string) string {
		ctx, cancel := context.WithTimeout(context.Background(), uclientTimeout)
		defer cancel()
		args = append([]string{"-y", "-n", "20", "-l", "200"}, append(args, "127.0.0.1")...)
		b, _ := exec.CommandContext(ctx, bin, args...).CombinedOutput() // its exit code says nothing reliable
		return string(b)
	}
	for _, c := range []struct {
		name string
		args []string
	}{
		{"udp", []string{"-u", "alice", "-w", "wonderland", "-p", fmt.Sprint(p)}},
		{"tcp", []string{"-t", "-u", "alice", "-w", "wonderland", "-p", fmt.Sprint(p)}},
		{"tls", []string{"-t", "-S", "-u", "alice", "-w", "wonderland", "-p", fmt.Sprint(p + 1)}},
		{"rest", []string{"-W", "s3cret", "-u", "bob", "-p", fmt.Sprint(p)}},
	} {
		// uclient's two clients start sending as soon as their own
		// permission is in place, so under -race on a busy machine the
		// first packets can reach the other relay before its permission:
		// a few lost packets are TURN, most lost would be a bug.
		out := run(c.args...)
		m := uclientLoss.FindStringSubmatch(out)
		if m == nil {
			t.Errorf("%s: uclient did not relay:\n%s", c.name, out)
			continue
		}
		if pct, _ := strconv.ParseFloat(m[1], 64); pct > maxUclientLoss {
			t.Errorf("%s: uclient lost %s%% of its packets:\n%s", c.name, m[1], out)
		}
		t.Logf("%s: %s", c.name, m[0])
	}
	if out := run("-u", "alice", "-w", "wrong", "-p", fmt.Sprint(p)); !strings.Contains(out, "Cannot complete Allocation") {
		t.Errorf("wrong password: uclient got an allocation:\n%s", out)
	}
}

func TestServeTURNFlags(t *testing.T) {
	dir := t.TempDir()
	users := filepath.Join(dir, "users")
	if err := os.WriteFile(users, []byte("alice:wonderland\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("alice\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l := []string{"--listen", "127.0.0.1:3478"}
	tests := []struct {
		args    []string
		wantErr string
	}{
		{append(l, "--users", users), ""},
		{append(l, "--users", users, "--allow-peer", "203.0.113.0/24", "--allow-peer", "198.51.100.7", "--tls-listen", "127.0.0.1:5349"), ""},
		{append(l, "--users", filepath.Join(dir, "missing")), "--users"},
		{append(l, "--users", bad), "line 1"},
		{append(l, "--users", users, "--allow-peer", "10.0.0.0/33"), "--allow-peer"},
		{append(l, "--users", users, "--tls-listen", "127.0.0.1:5349", "--tls-cert", users, "--tls-key", users), "--tls-cert"},
		{append(l, "--users", users, "--tls-cert", users), "need --tls-listen"},
		{append(l, "--tls-listen", "127.0.0.1:5349"), "needs TURN credentials"},
		{append(l, "--users", users, "--user-quota", "-1"), "--user-quota"},
		{[]string{"--listen", "0.0.0.0:3478", "--users", users}, "--relay-ip is needed"},
		{append(l, "--auth-secret", "x", "--auth-secret-file", users), "give one"},
	}
	for _, tt := range tests {
		s, _, _ := testStreams()
		c := NewCmdServe(s, func(_ context.Context, o *ServeOptions) error {
			a, err := parseServeAddrs(o)
			if err != nil {
				return err
			}
			_, err = parseTURN(o, a[0].Primary.Addr())
			return err
		})
		c.SetArgs(tt.args)
		c.SetOut(s.Out)
		c.SetErr(s.ErrOut)
		err := c.Execute()
		if tt.wantErr == "" {
			if err != nil {
				t.Errorf("%v: %v", tt.args, err)
			}
			continue
		}
		var fe *FlagError
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !asFlagError(err, &fe) {
			t.Errorf("%v: err %v, want a flag error containing %q", tt.args, err, tt.wantErr)
		}
	}
}

func TestServeFlagsDualStack(t *testing.T) {
	tests := []struct {
		args    []string
		wantErr string
		want    []server.Addrs
	}{
		{[]string{"--listen", "127.0.0.1:3478", "--listen", "[::1]:3478", "--alt-ip", "2001:db8::2", "--alt-ip", "127.0.0.2"}, "", []server.Addrs{
			{Primary: netip.MustParseAddrPort("127.0.0.1:3478"), AltIP: netip.MustParseAddr("127.0.0.2"), AltPort: 3479},
			{Primary: netip.MustParseAddrPort("[::1]:3478"), AltIP: netip.MustParseAddr("2001:db8::2"), AltPort: 3479}}},
		{[]string{"--listen", "[::1]:3478", "--listen", "127.0.0.1:0", "--alt-port", "4000"}, "", []server.Addrs{
			{Primary: netip.MustParseAddrPort("[::1]:3478"), AltPort: 4000},
			{Primary: netip.MustParseAddrPort("127.0.0.1:0"), AltPort: 4000}}},
		{[]string{"--listen", "127.0.0.1:3478", "--listen", "127.0.0.2:3478"}, "one address per family", nil},
		{[]string{"--listen", "[::1]:3478", "--alt-ip", "::2", "--alt-ip", "::3"}, "one per family", nil},
		{[]string{"--listen", "[::1]:3478", "--alt-ip", "127.0.0.2"}, "no --listen address of the same family", nil},
	}
	for _, tt := range tests {
		s, _, _ := testStreams()
		var got []server.Addrs
		c := NewCmdServe(s, func(_ context.Context, o *ServeOptions) error {
			var err error
			got, err = parseServeAddrs(o)
			return err
		})
		c.SetArgs(tt.args)
		c.SetOut(s.Out)
		c.SetErr(s.ErrOut)
		err := c.Execute()
		if tt.wantErr == "" {
			if err != nil || fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("%v: %v %+v, want %+v", tt.args, err, got, tt.want)
			}
			continue
		}
		var fe *FlagError
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !asFlagError(err, &fe) {
			t.Errorf("%v: err %v, want a flag error containing %q", tt.args, err, tt.wantErr)
		}
	}
}

// Dual stack: one `natlab serve` answers Binding on its IPv4 and IPv6
// sockets, says so per family in its status line, and relays TURN in
// each family.
func TestServeDualStack(t *testing.T) {
	interop.NeedLoopback6(t)
	users := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(users, []byte("alice:pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, out := runServeInProcess(t, "--listen", "127.0.0.1:0", "--listen", "[::1]:0", "--users", users, "--allow-peer", "::1", "--json")
	var st serveStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status %q: %v", out, err)
	}
	if len(st.Families) != 2 || st.Families[0].Family != "ipv4" || st.Families[1].Family != "ipv6" || st.TURN == nil {
		t.Fatalf("status %+v", st)
	}
	if st.TCP != st.Families[0].TCP || !strings.HasPrefix(st.Families[1].TCP, "[::1]:") {
		t.Errorf("tcp %q, families %+v", st.TCP, st.Families)
	}
	n, _ := stdnet.NewNet()
	for _, f := range st.Families {
		ap := netip.MustParseAddrPort(strings.TrimPrefix(f.Listening[0], "udp "))
		ctx, cancel := context.WithTimeout(context.Background(), serveTimeout)
		a, err := relay.Allocate(ctx, relay.AllocOptions{Net: n, Server: ap.String(), Username: "alice", Password: "pw"})
		cancel()
		if err != nil {
			t.Fatalf("%s: allocate: %v", f.Family, err)
		}
		if a.Relayed.Addr() != ap.Addr() {
			t.Errorf("%s: relayed %v, want on %v", f.Family, a.Relayed, ap.Addr())
		}
		_ = a.Close()
	}
}
