//go:build linux

package testnet

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/natlab/natlab/natclass"
)

// coturnStartup is how long turnserver gets to bind its four sockets
// before the client starts; it binds in milliseconds, this is slack.
const coturnStartup = 500 * time.Millisecond

// coturnBehavior is how turnutils_natdiscovery spells each behaviour.
var coturnBehavior = map[natclass.Behavior]string{
	natclass.EndpointIndependent:     "Endpoint Independent",
	natclass.AddressDependent:        "Address Dependent",
	natclass.AddressAndPortDependent: "Address and Port Dependent",
}

// TestKernelCoturnAgrees checks every preset against an outside RFC 5780
// implementation: coturn's turnserver on the lab server and its
// turnutils_natdiscovery on the host must report the preset's mapping,
// filtering and hairpinning.
func TestKernelCoturnAgrees(t *testing.T) {
	if testing.Short() {
		t.Skip("coturn discovery waits out its own timeouts (tens of seconds)")
	}
	for _, tool := range []string{"turnserver", "turnutils_natdiscovery", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("coturn interop: %v", err)
		}
	}
	for _, name := range Presets() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			top, err := PairTopology(name, "")
			if err != nil {
				t.Fatal(err)
			}
			want := top.Sites[0].NAT.Expect()
			if want.NATType == natclass.UDPBlocked {
				t.Skip("nothing to discover without UDP")
			}
			lab := kernStartLab(t, top)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			srv, err := lab.Server.Command(ctx, "turnserver", "-L", ServerAddrs[0].String(), "-L", ServerAddrs[1].String(),
				"--stun-only", "--no-tls", "--no-dtls", "--no-cli", "-n", "--log-file=stdout", "--simple-log")
			if err != nil {
				t.Fatal(err)
			}
			if err := srv.Start(); err != nil {
				t.Fatalf("turnserver: %v", err)
			}
			defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
			time.Sleep(coturnStartup)

			discover := func(flag string) string {
				cmd, err := lab.Site("a").Host.Command(ctx, "turnutils_natdiscovery", flag, ServerAddrs[0].String())
				if err != nil {
					t.Fatal(err)
				}
				out, err := cmd.CombinedOutput()
				if err != nil {
					t.Fatalf("natdiscovery %s: %v\n%s", flag, err, out)
				}
				return string(out)
			}
			if out := discover("-m"); !strings.Contains(out, fmt.Sprintf("NAT with %s Mapping!", coturnBehavior[want.Mapping])) {
				t.Errorf("coturn mapping disagrees with %s:\n%s", want.Mapping, out)
			}
			if out := discover("-f"); !strings.Contains(out, fmt.Sprintf("NAT with %s Filtering!", coturnBehavior[want.Filtering])) {
				t.Errorf("coturn filtering disagrees with %s:\n%s", want.Filtering, out)
			}
			if want.Hairpinning != natclass.NotChecked {
				out := discover("-H")
				if got := strings.Contains(out, "successful hairpinning"); got != (want.Hairpinning == natclass.Yes) {
					t.Errorf("coturn hairpinning %v, want %v:\n%s", got, want.Hairpinning, out)
				}
			}
		})
	}
}
