package main

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/pion/transport/v4/stdnet"

	"github.com/natlab/natlab/relay"
	"github.com/natlab/natlab/rendezvous"
)

// pairTimeout bounds one legitimate pairing (pair and two steps): a few
// round trips, with retransmissions from 100 ms.
const pairTimeout = 5 * time.Second

// legitPairings pairs two clients and runs two steps, again and again.
func legitPairings(ctx context.Context, server string, c *legitCount) {
	n, err := stdnet.NewNet()
	if err != nil {
		return
	}
	for ctx.Err() == nil {
		c.Tried++
		if err := pairOnce(ctx, n, server); err != nil {
			fmt.Fprintln(os.Stderr, "loadbench: legitimate pairing:", err)
		} else {
			c.OK++
		}
		select { // one pairing at a time, a few a second, as probes on one host
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func pairOnce(ctx context.Context, n *stdnet.Net, server string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), pairTimeout)
	defer cancel()
	a, err := rendezvous.Dial(n, server)
	if err != nil {
		return err
	}
	defer a.Close()
	b, err := rendezvous.Dial(n, server)
	if err != nil {
		return err
	}
	defer b.Close()
	code, err := rendezvous.NewCode()
	if err != nil {
		return err
	}
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, cl := range []*rendezvous.Client{a, b} {
		mode := rendezvous.Create
		if i == 1 {
			mode = rendezvous.Join
			time.Sleep(20 * time.Millisecond) // the creator registers first
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, errs[i] = cl.Pair(ctx, mode, code, nil, nil); errs[i] != nil {
				return
			}
			for k := 1; k <= 2 && errs[i] == nil; k++ {
				_, errs[i] = cl.Step(ctx, k, k)
			}
		}()
	}
	wg.Wait()
	if errs[0] != nil {
		return errs[0]
	}
	return errs[1]
}

// legitAllocations allocates over UDP and releases, every 200 ms.
func legitAllocations(ctx context.Context, o options, c *legitCount) {
	n, err := stdnet.NewNet()
	if err != nil {
		return
	}
	for ctx.Err() == nil {
		c.Tried++
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), pairTimeout)
		a, err := relay.Allocate(actx, relay.AllocOptions{Net: n, Server: o.server, Transport: relay.UDP, Username: o.user, Password: o.pass})
		cancel()
		if err == nil {
			c.OK++
			_ = a.Close()
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}
