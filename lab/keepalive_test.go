package lab_test

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/natlab/natlab/lab"
	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/probe"
	"github.com/natlab/natlab/rendezvous"
	"github.com/natlab/natlab/testnet"
)

// TestProbeLifetimeKeepalive: two probes with --lifetime find a direct
// path, then each measures its own NAT's lifetimes (short ones here) and
// its verdict gains the keepalive that path needs.
func TestProbeLifetimeKeepalive(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for mappings to expire")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	lifetimes := map[string][2]time.Duration{"full-cone": {1500 * time.Millisecond, 3 * time.Second}, "carrier": {2 * time.Second, 4 * time.Second}}
	var topo testnet.Topology
	for _, name := range []string{"full-cone", "carrier"} {
		n, err := testnet.Preset(name)
		if err != nil {
			t.Fatal(err)
		}
		n.MappingLifetime, n.EstablishedLifetime = lifetimes[name][0], lifetimes[name][1]
		topo.Sites = append(topo.Sites, testnet.SiteSpec{Name: name[:1], Preset: name, NAT: n})
	}
	l, err := testnet.Start(ctx, topo, testnet.InProcess)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	srv, err := lab.StartServer(l, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	code, err := rendezvous.NewCode()
	if err != nil {
		t.Fatal(err)
	}
	reps := make([]*probe.Report, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, site := range l.Sites {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reps[i], errs[i] = probe.Run(ctx, probe.Options{Net: site.Host.Net, Server: netip.AddrPortFrom(l.Server.Addr(), lab.STUNPort).String(),
				Mode: rendezvous.Meet, Code: code, NoPortMap: true, Lifetime: true, LifetimeMax: 10 * time.Second})
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	for i, r := range reps {
		name := l.Sites[i].Spec.Preset
		est := lifetimes[name][1]
		k := r.Keepalive
		if !r.Verdict.Direct || r.Verdict.Technique != natclass.DirectUDP || k == nil {
			t.Fatalf("%s: verdict %+v, keepalive %+v, not run %v", name, r.Verdict, k, r.Self.NotRun)
		}
		got := time.Duration(k.LifetimeS * float64(time.Second))
		if !k.Established || got >= est || got < est-2*time.Second || k.IntervalS != probe.KeepaliveInterval(k.LifetimeS) || k.PacketsPerHour != 3600/k.IntervalS {
			t.Errorf("%s: keepalive %+v, want one from an established lifetime just under %v", name, k, est)
		}
		if !strings.Contains(r.Verdict.Summary, "keepalive every") {
			t.Errorf("%s: verdict %q names no keepalive", name, r.Verdict.Summary)
		}
		t.Logf("%s: %s", name, r.Verdict.Summary)
	}
}
