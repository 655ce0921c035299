package holepunch_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/natlab/natlab/holepunch"
	"github.com/natlab/natlab/internal/leakcheck"
	"github.com/natlab/natlab/testnet"
)

// lateStart is how much later B starts its first attempt in
// TestPunchRetryKernel: past DefaultOpening, so A's probes reach B's router
// before B's mapping exists and conntrack moves B's port (measured: the
// first attempt then fails every time).
const lateStart = 300 * time.Millisecond

// retryRuns is how many retried punches TestPunchRetryKernel makes.
const retryRuns = 5

// TestPunchRetryKernel shows mitigation (c): when the first socket is
// caught in the conntrack trap, a fresh socket with candidates traded
// again (which also re-synchronises the start) gets through.
func TestPunchRetryKernel(t *testing.T) {
	lab := startLab(t, testnet.Kernel, "port-restricted-cone", "port-restricted-cone")
	leakcheck.Check(t)
	ok := 0
	for i := range retryRuns {
		o := retryPair(t, lab)
		t.Logf("run %d: %v", i, o)
		if o.ok() {
			ok++
		}
	}
	t.Logf("port-restricted-cone × port-restricted-cone, B %v late, 2 attempts: %d/%d", lateStart, ok, retryRuns)
	if ok != retryRuns {
		t.Errorf("%d/%d retried punches succeeded, want all", ok, retryRuns)
	}
}

func retryPair(t *testing.T, lab *testnet.Lab) outcome {
	ctx, cancel := context.WithTimeout(context.Background(), pairBound)
	defer cancel()
	ha, hb := lab.Site("a").Host, lab.Site("b").Host
	a, b := newPeer(t, ctx, ha, nil), newPeer(t, ctx, hb, nil)
	sess, err := holepunch.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	// The rendezvous: each side's candidates for an attempt go to the other.
	toA, toB := make(chan []holepunch.Candidate, 1), make(chan []holepunch.Candidate, 1)
	exchange := func(out, in chan []holepunch.Candidate) holepunch.Exchange {
		return func(ctx context.Context, _ int, local []holepunch.Candidate) ([]holepunch.Candidate, error) {
			out <- local
			select {
			case c := <-in:
				return c, nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	}
	var o outcome
	var pa, pb *holepunch.Path
	var wg sync.WaitGroup
	wg.Go(func() {
		pa, o.a, o.errA = holepunch.PunchUDPRetry(ctx, holepunch.RetryConfig{
			Config: holepunch.Config{Net: ha.Net, Conn: a.conn, Session: sess, Remote: b.cands, OpeningTTL: 2},
			STUN:   stunServer, Exchange: exchange(toB, toA)})
	})
	wg.Go(func() {
		time.Sleep(lateStart)
		pb, o.b, o.errB = holepunch.PunchUDPRetry(ctx, holepunch.RetryConfig{
			Config: holepunch.Config{Net: hb.Net, Conn: b.conn, Session: sess.Peer(), Remote: a.cands, OpeningTTL: 2},
			STUN:   stunServer, Exchange: exchange(toA, toB)})
	})
	wg.Wait()
	for _, p := range []*holepunch.Path{pa, pb} {
		if p != nil {
			_ = p.Close()
		}
	}
	return o
}
