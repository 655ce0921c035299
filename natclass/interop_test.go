package natclass_test

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/pion/transport/v4/stdnet"

	"github.com/natlab/natlab/internal/interop"
	"github.com/natlab/natlab/natclass"
)

// TestDiscoverAgainstCoturn compares natlab's verdict with coturn's own
// natdiscovery against the same coturn server.
func TestDiscoverAgainstCoturn(t *testing.T) {
	interop.Need(t, interop.Turnserver)
	interop.Need(t, interop.NATDiscoveryBin)
	interop.NeedLoopback2(t)
	addr := interop.StartCoturn(t, interop.FreePortPair(t))

	wantM, wantF, out := interop.NATDiscovery(t, addr)
	if wantM == "" || wantF == "" {
		t.Fatalf("natdiscovery gave no verdict:\n%s", out)
	}
	n, err := stdnet.NewNet()
	if err != nil {
		t.Fatal(err)
	}
	before := runtime.NumGoroutine()
	p, err := natclass.Discover(context.Background(), natclass.Options{Net: n, Servers: []string{addr.String()}})
	if err != nil {
		t.Fatal(err)
	}
	if p.Mapping != wantM || p.Filtering != wantF {
		t.Errorf("natlab says %q/%q, natdiscovery %q/%q", p.Mapping, p.Filtering, wantM, wantF)
	}
	if p.OtherAddress == "" || len(p.NotRun) != 1 || p.NotRun[0].Test != natclass.TestHairpinning {
		t.Errorf("coturn is RFC 5780 complete, yet other=%q not_run=%+v", p.OtherAddress, p.NotRun)
	}
	if p.NATType != natclass.Open {
		t.Errorf("loopback is %s, want open", p.NATType)
	}
	if p.DurationMillis > 1000 {
		t.Errorf("check took %.0f ms on loopback", p.DurationMillis)
	}
	for end := time.Now().Add(time.Second); runtime.NumGoroutine() > before && time.Now().Before(end); {
		time.Sleep(5 * time.Millisecond)
	}
	if g := runtime.NumGoroutine(); g > before {
		t.Errorf("%d goroutines after Discover, %d before", g, before)
	}
}
