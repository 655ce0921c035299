package cmd_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/probe"
	"github.com/natlab/natlab/testnet"
)

// TestProbeRelayIPv6Processes: `natlab serve` dual stack with TURN users
// and two `natlab probe --server6 … --turn-user …` processes on kernel-lab
// hosts behind symmetric IPv4 NATs and IPv6 firewalls. The IPv6 relay
// needs no flag of its own: B's JSON report carries ipv6.relay (IPv6
// relayed addresses on the server's IPv6 address) and the IPv6 relay row
// last among the IPv6 rows; A's text report lists that row too.
func TestProbeRelayIPv6Processes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), processBound)
	defer cancel()
	lab := startDualStackLab(ctx, t, "ipv6-firewall", "nat66")
	bin := natlabBinary(t)
	users := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(users, []byte("alice:wonderland\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv4, srv6 := "203.0.113.10:3478", "[2001:db8:10::10]:3478"
	serve, _ := lab.Server.Command(ctx, bin, "serve", "--listen", srv4, "--alt-ip", "203.0.113.11",
		"--listen", srv6, "--alt-ip", "2001:db8:10::11", "--users", users)
	var serveErr lockedBuffer
	serve.Stderr = &serveErr
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = serve.Process.Kill(); _ = serve.Wait() }()
	for strings.Count(serveErr.String(), "STUN server listening") < 2 {
		select {
		case <-ctx.Done():
			t.Fatalf("natlab serve never listened:\n%s", serveErr.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	args := []string{"probe", "--server", srv4, "--server6", srv6, "--turn-user", "alice", "--turn-password", "wonderland", "--pair-timeout", "60s"}
	a, _ := lab.Site("a").Host.Command(ctx, bin, args...)
	var aOut lockedBuffer
	a.Stdout = &aOut
	aErr, err := a.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	code := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(aErr)
		for sc.Scan() {
			if m := codeRE.FindStringSubmatch(sc.Text()); m != nil {
				code <- m[1]
			}
		}
	}()
	var c string
	select {
	case c = <-code:
	case <-ctx.Done():
		t.Fatal("probe A printed no pairing code")
	}
	b, _ := lab.Site("b").Host.Command(ctx, bin, append(args, "--join", c, "--json")...)
	bOut, bErr := b.Output()
	aWait := a.Wait()
	var ee *exec.ExitError
	for name, err := range map[string]error{"A": aWait, "B": bErr} {
		// Exit 0 (direct over IPv6) or 3 (relay only) are both reports.
		if err != nil && (!errors.As(err, &ee) || ee.ExitCode() != 3) {
			t.Fatalf("probe %s: %v\n%s", name, err, stderrOf(err))
		}
	}
	t.Logf("A's report:\n%s", aOut.String())
	var rep probe.Report
	if err := json.Unmarshal(bOut, &rep); err != nil {
		t.Fatalf("B: report is not JSON: %v\n%s", err, bOut)
	}
	checkRelay6(t, rep)
	if !strings.Contains(aOut.String(), "relay-udp") || strings.Count(aOut.String(), "relay-udp") < 2 {
		t.Errorf("A's text report lists no IPv6 relay row:\n%s", aOut.String())
	}
}

// checkRelay6 checks a report's IPv6 relay: relayed addresses on the
// lab server's IPv6 address, figures, and its row last.
func checkRelay6(t *testing.T, rep probe.Report) {
	t.Helper()
	if rep.IPv6 == nil || rep.IPv6.Relay == nil || len(rep.IPv6.Techniques) == 0 {
		t.Fatalf("B: IPv6 result %+v", rep.IPv6)
	}
	rr := rep.IPv6.Relay
	t.Logf("B: IPv6 relay %s ↔ %s: %+v", rr.Relayed, rr.PeerRelayed, rr.Relay)
	if ap, err := netip.ParseAddrPort(rr.Relayed); err != nil || ap.Addr() != netip.MustParseAddr("2001:db8:10::10") {
		t.Errorf("B: IPv6 relayed address %q", rr.Relayed)
	}
	if rr.Technique != natclass.RelayUDP || rr.Relay == nil || rr.Relay.ThroughputMbps <= 0 {
		t.Errorf("B: IPv6 relay %+v", rr)
	}
	if row := rep.IPv6.Techniques[len(rep.IPv6.Techniques)-1]; row.Technique != natclass.RelayUDP || row.Measured != natclass.Success || row.Predicted != natclass.Success {
		t.Errorf("B: IPv6 relay row %+v", row)
	}
}

// startDualStackLab starts a kernel lab of two sites behind symmetric
// IPv4 NATs and the given IPv6 presets.
func startDualStackLab(ctx context.Context, t *testing.T, six ...string) *testnet.Lab {
	t.Helper()
	sym, err := testnet.Preset("symmetric")
	if err != nil {
		t.Fatal(err)
	}
	var topo testnet.Topology
	for i, name := range six {
		n6, err := testnet.Preset6(name)
		if err != nil {
			t.Fatal(err)
		}
		topo.Sites = append(topo.Sites, testnet.SiteSpec{Name: string(rune('a' + i)), Preset: "symmetric", NAT: sym, IPv6: &n6, IPv6Preset: name})
	}
	lab, err := testnet.Start(ctx, topo, testnet.Kernel)
	if errors.Is(err, testnet.ErrNeedPrivileges) {
		t.Skipf("kernel lab: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lab.Close() })
	return lab
}
