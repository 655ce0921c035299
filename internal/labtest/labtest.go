// Package labtest starts kernel labs for tests: it skips a test where
// this machine cannot build one (no root or CAP_NET_ADMIN), runs
// natlab's servers in it, and pairs two probes there, tearing everything
// down when the test ends. Only tests import it.
package labtest

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"

	"github.com/natlab/natlab/lab"
	"github.com/natlab/natlab/probe"
	"github.com/natlab/natlab/rendezvous"
	"github.com/natlab/natlab/server"
	"github.com/natlab/natlab/testnet"
)

// Kernel starts topo on the kernel backend within ctx, skips t when this
// machine cannot build a kernel lab, and closes the lab when t ends.
func Kernel(t testing.TB, ctx context.Context, topo testnet.Topology) *testnet.Lab {
	t.Helper()
	tl, err := testnet.Start(ctx, topo, testnet.Kernel)
	if errors.Is(err, testnet.ErrNeedPrivileges) {
		t.Skipf("kernel lab: %v", err)
	}
	if err != nil {
		t.Fatalf("kernel lab: %v", err)
	}
	t.Cleanup(func() { _ = tl.Close() })
	return tl
}

// Servers starts natlab's servers in tl (lab.StartServers: IPv4, and
// IPv6 in a dual-stack lab, pairing through one rendezvous) until t
// ends.
func Servers(t testing.TB, tl *testnet.Lab) *server.Group {
	t.Helper()
	g, err := lab.StartServers(tl, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Close() })
	return g
}

// Server is the lab server's primary IPv4 address, host:port.
func Server(tl *testnet.Lab) string {
	return netip.AddrPortFrom(tl.Server.Addr(), lab.STUNPort).String()
}

// Pair runs probe.Run for both of nets at once, met with a fresh code;
// o is each side's options (Net, Mode and Code are filled in). It fails
// t when either side fails.
func Pair(t testing.TB, ctx context.Context, nets [2]*testnet.Host, o func(side int) probe.Options) [2]*probe.Report {
	t.Helper()
	code, err := rendezvous.NewCode()
	if err != nil {
		t.Fatal(err)
	}
	var reps [2]*probe.Report
	var errs [2]error
	var wg sync.WaitGroup
	for i, h := range nets {
		wg.Go(func() {
			po := o(i)
			po.Net, po.Mode, po.Code = h.Net, rendezvous.Meet, code
			reps[i], errs[i] = probe.Run(ctx, po)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("side %d: %v", i, err)
		}
	}
	return reps
}
