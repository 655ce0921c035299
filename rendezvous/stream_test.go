package rendezvous_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"strconv"
	"sync"
	"testing"

	"github.com/pion/transport/v4/stdnet"

	"github.com/natlab/natlab/rendezvous"
)

// TestPairOverTCPWithUDPPeer pairs a peer on TCP (as one behind a
// UDP-blocking firewall would be) with a peer on UDP, on loopback, and
// runs a barrier step between them.
func TestPairOverTCPWithUDPPeer(t *testing.T) {
	n, err := stdnet.NewNet()
	if err != nil {
		t.Fatal(err)
	}
	reg := rendezvous.NewRegistry(nil)
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	port := pc.LocalAddr().(*net.UDPAddr).Port
	ln, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Skipf("TCP port %d taken: %v", port, err)
	}
	defer ln.Close()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = reg.Serve(pc) }()
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); defer c.Close(); reg.ServeStream(c, nil) }()
		}
	}()
	defer wg.Wait()
	defer ln.Close()
	defer pc.Close()

	ctx, cancel := context.WithTimeout(context.Background(), testBound)
	defer cancel()
	addr := pc.LocalAddr().String()
	a, err := rendezvous.DialTCP(ctx, n, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := rendezvous.Dial(n, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	code, _ := rendezvous.NewCode()
	ra, rb := pairBoth(ctx, a, b, rendezvous.Create, rendezvous.Join, code)
	if ra.err != nil || rb.err != nil {
		t.Fatalf("pair: tcp=%v udp=%v", ra.err, rb.err)
	}
	var da, db json.RawMessage
	var ea, eb error
	var sw sync.WaitGroup
	sw.Add(2)
	go func() { defer sw.Done(); da, ea = a.Step(ctx, 1, "from-tcp") }()
	go func() { defer sw.Done(); db, eb = b.Step(ctx, 1, "from-udp") }()
	sw.Wait()
	if err := errors.Join(ea, eb); err != nil {
		t.Fatal(err)
	}
	if string(da) != `"from-udp"` || string(db) != `"from-tcp"` {
		t.Fatalf("tcp got %s, udp got %s", da, db)
	}
}
