// Package interop runs the Debian STUN programs natlab is checked against
// (coturn's turnserver and turnutils_natdiscovery, stun-client's stun) from
// tests, with bounded time and cleanup.
package interop

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"github.com/natlab/natlab/natclass"
)

// Programs and the Debian packages that provide them.
const (
	Turnserver      = "turnserver"             // coturn
	NATDiscoveryBin = "turnutils_natdiscovery" // coturn
	StunClientBin   = "stun"                   // stun-client
)

var packages = map[string]string{Turnserver: "coturn", NATDiscoveryBin: "coturn", StunClientBin: "stun-client"}

// runTimeout bounds one run of an external client: on loopback they answer
// in milliseconds, and their own retransmissions give up within seconds.
const runTimeout = 20 * time.Second

// readyTimeout bounds waiting for a started server to answer: coturn
// starts in well under a second.
const readyTimeout = 5 * time.Second

// Runner makes a command, on this host (Local) or inside a lab host
// (testnet.Host.Command).
type Runner func(ctx context.Context, name string, args ...string) (*exec.Cmd, error)

// Local runs programs on this host.
func Local(ctx context.Context, name string, args ...string) (*exec.Cmd, error) {
	return exec.CommandContext(ctx, name, args...), nil
}

// Need skips the test when prog is not installed, naming its package.
func Need(t testing.TB, prog string) string {
	t.Helper()
	p, err := exec.LookPath(prog)
	if err != nil {
		t.Skipf("%s not installed (Debian package %s)", prog, packages[prog])
	}
	return p
}

// NeedLoopback2 skips unless 127.0.0.2 can be bound (it can on Linux).
func NeedLoopback2(t testing.TB) {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.2:0")
	if err != nil {
		t.Skipf("cannot bind 127.0.0.2: %v", err)
	}
	_ = c.Close()
}

// NeedLoopback6 skips when the host has no IPv6 loopback (a container
// started with IPv6 disabled).
func NeedLoopback6(t testing.TB) {
	t.Helper()
	c, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	_ = c.Close()
}

// FreePortPair returns a UDP port P, free on 127.0.0.1 and 127.0.0.2,
// with P+1 free as well.
func FreePortPair(t testing.TB) uint16 {
	t.Helper()
	for range 50 {
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := uint16(c.LocalAddr().(*net.UDPAddr).Port)
		_ = c.Close()
		if p >= 65000 {
			continue
		}
		free := true
		for _, a := range []string{"127.0.0.1", "127.0.0.2"} {
			for _, q := range []uint16{p, p + 1} {
				for _, n := range []string{"udp4", "tcp4"} {
					var err error
					if n == "udp4" {
						var c net.PacketConn
						if c, err = net.ListenPacket(n, fmt.Sprintf("%s:%d", a, q)); err == nil {
							_ = c.Close()
						}
					} else {
						var l net.Listener
						if l, err = net.Listen(n, fmt.Sprintf("%s:%d", a, q)); err == nil {
							_ = l.Close()
						}
					}
					free = free && err == nil
				}
			}
		}
		if free {
			return p
		}
	}
	t.Fatal("no free port pair on loopback")
	return 0
}

// StartCoturn runs turnserver as an RFC 5780 STUN server on 127.0.0.1 and
// 127.0.0.2 (ports p and p+1) and waits until it answers.
func StartCoturn(t testing.TB, p uint16) netip.AddrPort {
	t.Helper()
	addr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), p)
	StartCoturnOn(t, Local, addr, netip.MustParseAddr("127.0.0.2"), nil)
	return addr
}

// StartCoturnOn runs turnserver with run on primary and altIP (ports
// primary.Port() and +1); ready, if set, reports once it answers (nil:
// probe it from this host).
func StartCoturnOn(t testing.TB, run Runner, primary netip.AddrPort, altIP netip.Addr, ready func() error) {
	t.Helper()
	bin := Need(t, Turnserver)
	p := primary.Port()
	ctx, cancel := context.WithCancel(context.Background())
	cmd, err := run(ctx, bin, "-n", "--listening-ip", primary.Addr().String(), "--listening-ip", altIP.String(),
		"--listening-port", fmt.Sprint(p), "--alt-listening-port", fmt.Sprint(p+1),
		"--no-tls", "--no-dtls", "--stun-only", "--no-cli", "--log-file", "stdout", "--simple-log")
	if err != nil {
		cancel()
		t.Fatalf("turnserver: %v", err)
	}
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
	if ready == nil {
		ready = func() error { return WaitSTUN(primary, readyTimeout) }
	}
	if err := ready(); err != nil {
		t.Fatalf("turnserver on %s: %v\n%s", primary, err, out.String())
	}
}

// WaitSTUN sends Binding requests to addr until one is answered.
func WaitSTUN(addr netip.AddrPort, d time.Duration) error {
	network, local := "udp4", "127.0.0.1:0"
	if addr.Addr().Is6() {
		network, local = "udp6", "[::]:0"
	}
	c, err := net.ListenPacket(network, local)
	if err != nil {
		return err
	}
	defer c.Close()
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	buf := make([]byte, 1500)
	for end := time.Now().Add(d); time.Now().Before(end); {
		if _, err := c.WriteTo(req.Raw, net.UDPAddrFromAddrPort(addr)); err != nil {
			return err
		}
		_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if n, _, err := c.ReadFrom(buf); err == nil && stun.IsMessage(buf[:n]) {
			return nil
		}
	}
	return fmt.Errorf("no STUN answer within %v", d)
}

var natdiscoveryRE = regexp.MustCompile(`NAT with (Endpoint Independent|Address Dependent|Address and Port Dependent) (Mapping|Filtering)`)

// NATDiscovery runs `turnutils_natdiscovery -m -f` against addr and returns
// the mapping and filtering it reports.
func NATDiscovery(t testing.TB, addr netip.AddrPort) (mapping, filtering natclass.Behavior, output string) {
	t.Helper()
	return NATDiscoveryOn(t, Local, addr)
}

// NATDiscoveryOn is NATDiscovery run with run.
func NATDiscoveryOn(t testing.TB, run Runner, addr netip.AddrPort) (mapping, filtering natclass.Behavior, output string) {
	t.Helper()
	bin := Need(t, NATDiscoveryBin)
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	cmd, err := run(ctx, bin, "-m", "-f", "-p", fmt.Sprint(addr.Port()), addr.Addr().String())
	if err != nil {
		t.Fatalf("turnutils_natdiscovery: %v", err)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("turnutils_natdiscovery: %v\n%s", err, out)
	}
	names := map[string]natclass.Behavior{
		"Endpoint Independent": natclass.EndpointIndependent, "Address Dependent": natclass.AddressDependent,
		"Address and Port Dependent": natclass.AddressAndPortDependent,
	}
	for _, m := range natdiscoveryRE.FindAllStringSubmatch(string(out), -1) {
		if m[2] == "Mapping" {
			mapping = names[m[1]]
		} else {
			filtering = names[m[1]]
		}
	}
	return mapping, filtering, string(out)
}

// StunClient runs the classic `stun` client against addr and returns its
// exit code (its NAT type code) and output.
func StunClient(t testing.TB, addr netip.AddrPort) (int, string) {
	t.Helper()
	return StunClientOn(t, Local, addr)
}

// StunClientOn is StunClient run with run.
func StunClientOn(t testing.TB, run Runner, addr netip.AddrPort) (int, string) {
	t.Helper()
	bin := Need(t, StunClientBin)
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	cmd, err := run(ctx, bin, addr.String())
	if err != nil {
		t.Fatalf("stun client: %v", err)
	}
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("stun client timed out\n%s", out)
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("stun client: %v", err)
	}
	return code, string(out)
}

// stunClientNames are the classic client's "Primary:" verdicts for each
// RFC 3489 type.
var stunClientNames = map[natclass.NATType]string{
	natclass.Open:               "Open",
	natclass.FullCone:           "Independent Mapping, Independent Filter",
	natclass.RestrictedCone:     "Independent Mapping, Address Dependent Filter",
	natclass.PortRestrictedCone: "Independent Mapping, Port Dependent Filter",
	natclass.Symmetric:          "Dependent Mapping",
	natclass.SymmetricFirewall:  "Firewall",
	natclass.UDPBlocked:         "Blocked",
}

// StunClientVerdict is the start of the classic client's "Primary:" line
// for a NAT of type n.
func StunClientVerdict(n natclass.NATType) string { return "Primary: " + stunClientNames[n] }
