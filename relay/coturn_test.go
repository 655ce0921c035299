package relay

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"testing"
	"time"

	"github.com/pion/transport/v4/stdnet"

	"github.com/natlab/natlab/internal/interop"
	"github.com/natlab/natlab/server"
)

// coturnReady bounds waiting for turnserver to answer: it starts in well
// under a second.
const coturnReady = 5 * time.Second

// startCoturnTURN runs coturn's turnserver as a TURN relay on loopback
// with the given credential flags; loopback peers are allowed, as
// natlab's test server allows them.
func startCoturnTURN(t *testing.T, auth ...string) netip.AddrPort {
	t.Helper()
	bin := interop.Need(t, interop.Turnserver)
	p := interop.FreePortPair(t)
	addr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), p)
	args := append([]string{"-n", "--listening-ip", "127.0.0.1", "--relay-ip", "127.0.0.1",
		"--listening-port", fmt.Sprint(p), "--realm", "natlab", "--allow-loopback-peers",
		"--no-tls", "--no-dtls", "--no-cli", "--log-file", "stdout", "--simple-log"}, auth...)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start turnserver: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait() // killed on purpose
	})
	if err := interop.WaitSTUN(addr, coturnReady); err != nil {
		t.Fatalf("turnserver: %v\n%s", err, out.String())
	}
	return addr
}

// natlab's relay client allocates and relays through coturn with
// long-term credentials, over UDP and TCP.
func TestCoturnLongTerm(t *testing.T) {
	addr := startCoturnTURN(t, "--lt-cred-mech", "--user", testUser+":"+testPass)
	n, _ := stdnet.NewNet()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	a, err := Allocate(ctx, AllocOptions{Net: n, Server: addr.String(), Transport: UDP, Username: testUser, Password: testPass})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Allocate(ctx, AllocOptions{Net: n, Server: addr.String(), Transport: TCP, Username: testUser, Password: testPass})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	figs := measurePair(t, ctx, a, b, MeasureOptions{BurstBytes: 1 << 20})
	for i, f := range figs {
		t.Logf("coturn side %d: %+v", i, f)
		if f.Echoes == 0 || f.ThroughputInMbps <= 0 {
			t.Errorf("side %d: %+v", i, f)
		}
	}
	if _, err := Allocate(ctx, AllocOptions{Net: n, Server: addr.String(), Username: testUser, Password: "wrong"}); err == nil {
		t.Error("coturn accepted a wrong password")
	}
}

// Ephemeral credentials made by natlab are accepted by coturn's
// use-auth-secret, and expired ones refused.
func TestCoturnAuthSecret(t *testing.T) {
	const secret = "s3cret"
	addr := startCoturnTURN(t, "--use-auth-secret", "--static-auth-secret", secret)
	n, _ := stdnet.NewNet()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	u, p := server.EphemeralCredentials(secret, "bob", time.Now().Add(time.Hour))
	var allocs [2]*Allocation
	for i := range allocs {
		a, err := Allocate(ctx, AllocOptions{Net: n, Server: addr.String(), Username: u, Password: p})
		if err != nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
		defer a.Close()
		allocs[i] = a
	}
	figs := measurePair(t, ctx, allocs[0], allocs[1], MeasureOptions{BurstBytes: 256 << 10})
	if figs[0].Echoes == 0 || figs[1].ThroughputInMbps <= 0 {
		t.Errorf("figures %+v", figs)
	}
	u, p = server.EphemeralCredentials(secret, "bob", time.Now().Add(-time.Minute))
	if _, err := Allocate(ctx, AllocOptions{Net: n, Server: addr.String(), Username: u, Password: p}); err == nil {
		t.Error("coturn accepted expired credentials")
	}
}
