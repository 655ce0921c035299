package labcheck

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/natlab/natlab/lab"
	"github.com/natlab/natlab/testnet"
)

// BenchmarkCheckVsClients is issue #2's benchmark on the kernel lab: from a
// host behind each NAT, it times the `natlab check` binary, Debian's `stun`
// client and coturn's `turnutils_natdiscovery` against the same natlab
// server, as processes, and reports each one's mean time and natlab's
// ratio to the others (goal: natlab ≤ 0.5× stun). Run it with
//
//	go test -run - -bench CheckVsClients -benchtime 10x ./internal/labcheck/
func BenchmarkCheckVsClients(b *testing.B) {
	for _, prog := range []string{"stun", "turnutils_natdiscovery"} {
		if _, err := exec.LookPath(prog); err != nil {
			b.Skipf("%s not installed (Debian packages stun-client, coturn)", prog)
		}
	}
	bin := filepath.Join(b.TempDir(), "natlab")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/natlab/natlab/cmd/natlab").CombinedOutput(); err != nil {
		b.Fatalf("build natlab: %v\n%s", err, out)
	}
	for _, preset := range []string{"port-restricted-cone", "symmetric"} {
		b.Run(preset, func(b *testing.B) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			topo, err := testnet.PairTopology(preset, "")
			if err != nil {
				b.Fatal(err)
			}
			tl, err := testnet.Start(ctx, topo, testnet.Kernel)
			if errors.Is(err, testnet.ErrNeedPrivileges) {
				b.Skipf("kernel lab: %v", err)
			}
			if err != nil {
				b.Fatal(err)
			}
			defer tl.Close()
			srv, err := lab.StartServer(tl, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer srv.Close()
			host := tl.Site("a").Host
			server := "203.0.113.10:3478"
			tools := []struct {
				name string
				args []string
			}{
				{"natlab", []string{bin, "check", "--portmap=false", "--server", server}},
				{"stun", []string{"stun", server}},
				{"natdiscovery", []string{"turnutils_natdiscovery", "-m", "-f", "203.0.113.10"}},
			}
			total := make([]time.Duration, len(tools))
			b.ResetTimer()
			for range b.N {
				for i, tool := range tools {
					cmd, err := host.Command(ctx, tool.args[0], tool.args[1:]...)
					if err != nil {
						b.Fatal(err)
					}
					start := time.Now()
					out, err := cmd.CombinedOutput()
					total[i] += time.Since(start)
					var ee *exec.ExitError
					if err != nil && (!errors.As(err, &ee) || tool.name == "natlab") {
						// The stun client exits with its NAT type code.
						b.Fatalf("%s: %v\n%s", tool.name, err, out)
					}
				}
			}
			mean := func(i int) float64 { return float64(total[i].Microseconds()) / 1000 / float64(b.N) }
			b.ReportMetric(mean(0), "natlab-ms")
			b.ReportMetric(mean(1), "stun-ms")
			b.ReportMetric(mean(2), "natdiscovery-ms")
			b.ReportMetric(mean(0)/mean(1), "natlab/stun")
			b.ReportMetric(mean(0)/mean(2), "natlab/natdiscovery")
		})
	}
}
