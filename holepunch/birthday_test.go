package holepunch_test

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/natlab/natlab/holepunch"
	"github.com/natlab/natlab/internal/leakcheck"
	"github.com/natlab/natlab/testnet"
)

// birthdayRuns is how many birthday punches TestBirthday makes per backend:
// enough to see a success rate, bounded by DefaultBirthdayTimeout each.
const birthdayRuns = 10

// TestBirthday punches symmetric (random allocator) × port-restricted cone,
// which plain punching cannot, by birthday probing, birthdayRuns times on
// each backend, and requires at least 95% success within
// DefaultBirthdayTimeout.
func TestBirthday(t *testing.T) {
	if testing.Short() {
		t.Skip("birthday probing sends thousands of probes")
	}
	for _, backend := range []testnet.Backend{testnet.InProcess, testnet.Kernel} {
		t.Run(string(backend), func(t *testing.T) {
			lab := startLab(t, backend, "symmetric", "port-restricted-cone")
			leakcheck.Check(t)
			ok := 0
			var total, worst time.Duration
			attempts := 0
			for i := range birthdayRuns {
				o := birthdayPair(t, lab)
				if !o.ok() {
					t.Logf("run %d: %v", i, o)
					continue
				}
				ok++
				d := max(o.a.Duration, o.b.Duration)
				total += d
				worst = max(worst, d)
				attempts += o.a.Attempts + o.b.Attempts
			}
			n := max(ok, 1)
			t.Logf("symmetric × port-restricted-cone on %s: %d/%d in %v mean, %v worst, %d probes mean (both sides)",
				backend, ok, birthdayRuns, total/time.Duration(n), worst, attempts/n)
			if ok*100 < birthdayRuns*95 {
				t.Errorf("%d/%d succeeded, want >= 95%%", ok, birthdayRuns)
			}
		})
	}
}

func birthdayPair(t *testing.T, lab *testnet.Lab) outcome {
	ctx, cancel := context.WithTimeout(context.Background(), holepunch.DefaultBirthdayTimeout+5*time.Second)
	defer cancel()
	// The symmetric side's srflx only tells the scanner its public IP.
	sym := newPeer(t, ctx, lab.Site("a").Host, nil)
	_ = sym.conn.Close()
	cone := newPeer(t, ctx, lab.Site("b").Host, nil)
	sess, err := holepunch.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	var o outcome
	var pa, pb *holepunch.Path
	var wg sync.WaitGroup
	wg.Go(func() {
		pa, o.a, o.errA = holepunch.PunchBirthday(ctx, holepunch.BirthdayConfig{
			Net: lab.Site("a").Host.Net, Session: sess, Role: holepunch.Spread, Peer: cone.srflx})
	})
	wg.Go(func() {
		pb, o.b, o.errB = holepunch.PunchBirthday(ctx, holepunch.BirthdayConfig{
			Conn: cone.conn, Session: sess.Peer(), Role: holepunch.Scan, Peer: sym.srflx})
	})
	wg.Wait()
	for _, p := range []*holepunch.Path{pa, pb} {
		if p != nil {
			_ = p.Close()
		}
	}
	return o
}

// TestBirthdayFailsClean runs the spreading side against a peer that never
// answers: it must give up at its deadline with ErrNoPath, having closed
// all of its sockets and ended all of its goroutines.
func TestBirthdayFailsClean(t *testing.T) {
	lab := startLab(t, testnet.InProcess, "symmetric", "symmetric")
	leakcheck.Check(t)
	sess, err := holepunch.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	const timeout = 500 * time.Millisecond
	start := time.Now()
	p, res, err := holepunch.PunchBirthday(context.Background(), holepunch.BirthdayConfig{
		Net: lab.Site("a").Host.Net, Session: sess, Role: holepunch.Spread,
		Peer: netip.AddrPortFrom(lab.Site("b").Public, 40000), Timeout: timeout})
	took := time.Since(start)
	if p != nil || !errors.Is(err, holepunch.ErrNoPath) {
		t.Fatalf("got path %v, err %v; want ErrNoPath", p, err)
	}
	if took > timeout+500*time.Millisecond {
		t.Errorf("took %v, deadline %v", took, timeout)
	}
	if res.Attempts < holepunch.DefaultBirthdaySockets {
		t.Errorf("%d probes, want at least one per socket (%d)", res.Attempts, holepunch.DefaultBirthdaySockets)
	}
}
