package rendezvous_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"sync"
	"testing"

	"github.com/pion/transport/v4/stdnet"

	"github.com/natlab/natlab/rendezvous"
)

// TestPairAcrossFamilies pairs a peer that reaches the server over IPv6
// (as an IPv6-only host does, at the server's IPv6 address or its IPv4
// one synthesised into a NAT64 prefix) with one over IPv4: one registry
// serves both sockets, as natlab serve's Group does. The IPv6 peer dials
// once over UDP and once over TCP.
func TestPairAcrossFamilies(t *testing.T) {
	n, err := stdnet.NewNet()
	if err != nil {
		t.Fatal(err)
	}
	reg := rendezvous.NewRegistry(nil)
	pc4, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pc6, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		pc4.Close()
		t.Skipf("no IPv6 loopback: %v", err)
	}
	ln6, err := net.Listen("tcp6", pc6.LocalAddr().String())
	if err != nil {
		pc4.Close()
		pc6.Close()
		t.Skipf("TCP port taken: %v", err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer pc4.Close()
	defer pc6.Close()
	defer ln6.Close()
	wg.Go(func() { _ = reg.Serve(pc4) })
	wg.Go(func() { _ = reg.Serve(pc6) })
	wg.Go(func() {
		for {
			c, err := ln6.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { defer c.Close(); reg.ServeStream(c, nil) })
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), testBound)
	defer cancel()
	for _, tcp := range []bool{false, true} {
		var six *rendezvous.Client
		if tcp {
			six, err = rendezvous.DialTCP(ctx, n, pc6.LocalAddr().String())
		} else {
			six, err = rendezvous.Dial(n, pc6.LocalAddr().String())
		}
		if err != nil {
			t.Fatal(err)
		}
		four, err := rendezvous.Dial(n, pc4.LocalAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		pairAndStep(ctx, t, six, four)
		six.Close()
		four.Close()
	}
}

// pairAndStep pairs a and b and runs one barrier step between them.
func pairAndStep(ctx context.Context, t *testing.T, a, b *rendezvous.Client) {
	t.Helper()
	code, _ := rendezvous.NewCode()
	ra, rb := pairBoth(ctx, a, b, rendezvous.Create, rendezvous.Join, code)
	if ra.err != nil || rb.err != nil {
		t.Fatalf("pair: a=%v b=%v", ra.err, rb.err)
	}
	var da, db json.RawMessage
	var ea, eb error
	var sw sync.WaitGroup
	sw.Go(func() { da, ea = a.Step(ctx, 1, "from-a") })
	sw.Go(func() { db, eb = b.Step(ctx, 1, "from-b") })
	sw.Wait()
	if err := errors.Join(ea, eb); err != nil {
		t.Fatal(err)
	}
	if string(da) != `"from-b"` || string(db) != `"from-a"` {
		t.Fatalf("a got %s, b got %s", da, db)
	}
}
