package labcheck

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/server"
	"github.com/natlab/natlab/testnet"
)

// lifetimeIn measures the binding lifetimes of a host behind nat and
// returns the profile and how long the measurement took.
func lifetimeIn(t testing.TB, b testnet.Backend, nat testnet.NAT, res time.Duration) (*natclass.Profile, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	lab, err := testnet.Start(ctx, testnet.Topology{Sites: []testnet.SiteSpec{{Name: "a", NAT: nat}}}, b)
	if errors.Is(err, testnet.ErrNeedPrivileges) || errors.Is(err, testnet.ErrNotSupported) {
		t.Skipf("%s lab unavailable: %v", b, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer lab.Close()
	addrs := server.Addrs{Primary: netip.AddrPortFrom(testnet.ServerAddrs[0], 3478), AltIP: testnet.ServerAddrs[1], AltPort: 3479}
	srv, err := server.Listen(lab.Server.Net, server.Config{Addrs: addrs})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	p, err := natclass.Discover(ctx, natclass.Options{Net: lab.Site("a").Host.Net, Servers: []string{addrs.Primary.String()},
		Lifetime: true, LifetimeResolution: res, LifetimeMax: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if p.BindingLifetimeS == nil || p.EstablishedLifetimeS == nil {
		t.Fatalf("lifetimes not measured: not run %+v", p.NotRun)
	}
	return p, time.Duration(p.DurationMillis * float64(time.Millisecond))
}

// within checks a measured lifetime: the last idle time a mapping
// survived is under the configured timeout by at most one grid step.
func within(t testing.TB, what string, got float64, want, res time.Duration) {
	t.Helper()
	g := time.Duration(got * float64(time.Second))
	if g >= want || g < want-res-time.Second {
		t.Errorf("%s lifetime %v, want just under %v", what, g, want)
	}
}

// TestLifetimeKernel measures both lifetimes of a real Linux NAT with
// short conntrack timeouts (3 s unreplied, 6 s stream): the idle mapping
// dies at the first, the one that carried traffic both ways for two
// seconds at the second, and the whole check takes about the longer one,
// not a bisection's sum of waits.
func TestLifetimeKernel(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for mappings to expire")
	}
	const idle, est = 3 * time.Second, 6 * time.Second
	nat, err := testnet.Preset("port-restricted-cone")
	if err != nil {
		t.Fatal(err)
	}
	nat.MappingLifetime, nat.EstablishedLifetime = idle, est
	p, took := lifetimeIn(t, testnet.Kernel, nat, time.Second)
	within(t, "idle", *p.BindingLifetimeS, idle, time.Second)
	within(t, "established", *p.EstablishedLifetimeS, est, time.Second)
	// 2.2 s to establish, the lifetime, two grid steps and two silent
	// answers' waits, and some slack; a bisection would wait ~60 s.
	if limit := 2*time.Second + est + 6*time.Second; took > limit {
		t.Errorf("measuring took %v, want under %v", took, limit)
	}
	t.Logf("idle %.0f s, established %.0f s, measured in %v", *p.BindingLifetimeS, *p.EstablishedLifetimeS, took)
}

// TestLifetimeInProcess is the same on the emulator, with sub-second
// lifetimes for the idle mapping.
func TestLifetimeInProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for mappings to expire")
	}
	const idle, est, res = 1500 * time.Millisecond, 4 * time.Second, 250 * time.Millisecond
	nat, err := testnet.Preset("symmetric")
	if err != nil {
		t.Fatal(err)
	}
	nat.MappingLifetime, nat.EstablishedLifetime = idle, est
	p, _ := lifetimeIn(t, testnet.InProcess, nat, res)
	within(t, "idle", *p.BindingLifetimeS, idle, res)
	within(t, "established", *p.EstablishedLifetimeS, est, res)
}

// BenchmarkLifetime10s measures a 10 s idle lifetime (40 s established,
// Linux's ratio) on the kernel lab and reports the measurement's time
// over the longest lifetime it found.
func BenchmarkLifetime10s(b *testing.B) {
	nat, err := testnet.Preset("port-restricted-cone")
	if err != nil {
		b.Fatal(err)
	}
	nat.MappingLifetime = 10 * time.Second
	for b.Loop() {
		p, took := lifetimeIn(b, testnet.Kernel, nat, time.Second)
		longest := max(*p.BindingLifetimeS, *p.EstablishedLifetimeS)
		b.ReportMetric(took.Seconds()/longest, "time/lifetime")
		b.ReportMetric(*p.BindingLifetimeS, "idle-s")
		b.ReportMetric(*p.EstablishedLifetimeS, "established-s")
		b.ReportMetric(took.Seconds(), "s")
	}
}
