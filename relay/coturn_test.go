package relay

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
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
	return startCoturnOn(t, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), interop.FreePortPair(t)), auth...)
}

// startCoturnOn is startCoturnTURN listening and relaying on addr's IP.
func startCoturnOn(t *testing.T, addr netip.AddrPort, auth ...string) netip.AddrPort {
	t.Helper()
	bin := interop.Need(t, interop.Turnserver)
	ip, p := addr.Addr().String(), addr.Port()
	args := append([]string{"-n", "--listening-ip", ip, "--relay-ip", ip,
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

// natlab's relay client allocates IPv6 relayed addresses on coturn
// listening on ::1 only, over UDP and TCP, and relays between them.
// coturn follows RFC 6156 (an IPv4 relay unless the client asks), so
// this works only because Allocate sends REQUESTED-ADDRESS-FAMILY, which
// pion/turn's client does not; asking for IPv4, or for nothing, gets
// coturn's 440.
func TestCoturnIPv6(t *testing.T) {
	interop.NeedLoopback6(t)
	addr := startCoturnOn(t, netip.AddrPortFrom(netip.IPv6Loopback(), freePort6(t)), "--lt-cred-mech", "--user", testUser+":"+testPass)
	for _, tr := range []Transport{UDP, TCP} {
		figs := allocatePair6(t, AllocOptions{Server: addr.String(), Transport: tr, Username: testUser, Password: testPass, Family: IPv6})
		for i, f := range figs {
			t.Logf("coturn over %s/IPv6, side %d: %+v", tr, i, f)
			if f.Echoes == 0 || f.ThroughputInMbps <= 0 {
				t.Errorf("%s side %d: %+v", tr, i, f)
			}
		}
	}
	n, _ := stdnet.NewNet()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	for _, f := range []Family{IPv4, ""} {
		_, err := Allocate(ctx, AllocOptions{Net: n, Server: addr.String(), Username: testUser, Password: testPass, Family: f})
		if err == nil || !strings.Contains(err.Error(), "440") {
			t.Errorf("family %q from coturn on ::1 (IPv4 by default): err %v, want its 440", f, err)
		}
	}
}

// freePort6 is a port free on ::1 for UDP and TCP, with the next one
// (coturn's alternate port) free too.
func freePort6(t *testing.T) uint16 {
	t.Helper()
	for range 50 {
		c, err := net.ListenPacket("udp6", "[::1]:0")
		if err != nil {
			t.Fatal(err)
		}
		p := uint16(c.LocalAddr().(*net.UDPAddr).Port)
		_ = c.Close()
		if p < 65000 && free6(p) && free6(p+1) {
			return p
		}
	}
	t.Fatal("no free port pair on ::1")
	return 0
}

func free6(p uint16) bool {
	a := fmt.Sprintf("[::1]:%d", p)
	c, err := net.ListenPacket("udp6", a)
	if err != nil {
		return false
	}
	_ = c.Close()
	l, err := net.Listen("tcp6", a)
	if err != nil {
		return false
	}
	_ = l.Close()
	return true
}
