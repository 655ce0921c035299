package rendezvous_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/natlab/natlab/rendezvous"
	"github.com/natlab/natlab/testnet"
)

const testBound = 10 * time.Second

// lab starts an in-process lab with two NATed sites and a rendezvous
// server on the server host; it returns the server address.
func lab(t *testing.T) (*testnet.Lab, string, func() *rendezvous.Registry) {
	t.Helper()
	topo, err := testnet.PairTopology("port-restricted-cone", "symmetric")
	if err != nil {
		t.Fatal(err)
	}
	l, err := testnet.Start(context.Background(), topo, testnet.InProcess)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	addr := netip.AddrPortFrom(l.Server.Addr(), 3480)
	var mu sync.Mutex
	var conn net.PacketConn
	var reg *rendezvous.Registry
	// restart (re)starts the server with an empty registry, as a server
	// process restart would.
	restart := func() *rendezvous.Registry {
		mu.Lock()
		defer mu.Unlock()
		if conn != nil {
			conn.Close()
		}
		c, err := l.Server.Net.ListenPacket("udp4", addr.String())
		if err != nil {
			t.Fatal(err)
		}
		conn, reg = c, rendezvous.NewRegistry(nil)
		go reg.Serve(c)
		return reg
	}
	restart()
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		conn.Close()
	})
	return l, addr.String(), restart
}

func dial(t *testing.T, l *testnet.Lab, site, server string) *rendezvous.Client {
	t.Helper()
	c, err := rendezvous.Dial(l.Site(site).Host.Net, server)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

type pairResult struct {
	peer rendezvous.Peer
	err  error
}

func pairBoth(ctx context.Context, a, b *rendezvous.Client, modeA, modeB rendezvous.Mode, code string) (pairResult, pairResult) {
	var ra, rb pairResult
	registered := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		ra.peer, ra.err = a.Pair(ctx, modeA, code, json.RawMessage(`{"site":"a"}`), func() { close(registered) })
	}()
	select {
	case <-registered:
	case <-time.After(2 * time.Second):
	}
	rb.peer, rb.err = b.Pair(ctx, modeB, code, json.RawMessage(`{"site":"b"}`), nil)
	wg.Wait()
	return ra, rb
}

func TestPairCreateJoinAndSteps(t *testing.T) {
	l, srv, _ := lab(t)
	ctx, cancel := context.WithTimeout(context.Background(), testBound)
	defer cancel()
	a, b := dial(t, l, "a", srv), dial(t, l, "b", srv)
	code, err := rendezvous.NewCode()
	if err != nil {
		t.Fatal(err)
	}
	ra, rb := pairBoth(ctx, a, b, rendezvous.Create, rendezvous.Join, code)
	if ra.err != nil || rb.err != nil {
		t.Fatalf("pair: a=%v b=%v", ra.err, rb.err)
	}
	if string(ra.peer.Info) != `{"site":"b"}` || string(rb.peer.Info) != `{"site":"a"}` {
		t.Fatalf("infos swapped wrong: a got %s, b got %s", ra.peer.Info, rb.peer.Info)
	}
	if ra.peer.Token != b.Token() || rb.peer.Token != a.Token() {
		t.Fatal("peer tokens not exchanged")
	}
	// The creator is told it came first, the joiner second: sides A, B.
	if ra.peer.Slot != 1 || rb.peer.Slot != 2 {
		t.Errorf("slots: creator %d, joiner %d; want 1, 2", ra.peer.Slot, rb.peer.Slot)
	}
	// Two barrier steps; each side gets the other's data for that step.
	for step := 1; step <= 2; step++ {
		var da, db json.RawMessage
		var ea, eb error
		var ta, tb time.Time
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); da, ea = a.Step(ctx, step, map[string]int{"a": step}); ta = time.Now() }()
		go func() {
			defer wg.Done()
			time.Sleep(50 * time.Millisecond) // b is late: a must wait for it
			db, eb = b.Step(ctx, step, map[string]int{"b": step})
			tb = time.Now()
		}()
		wg.Wait()
		if ea != nil || eb != nil {
			t.Fatalf("step %d: a=%v b=%v", step, ea, eb)
		}
		if want := `{"b":` + string(rune('0'+step)) + `}`; string(da) != want {
			t.Errorf("step %d: a got %s, want %s", step, da, want)
		}
		if want := `{"a":` + string(rune('0'+step)) + `}`; string(db) != want {
			t.Errorf("step %d: b got %s, want %s", step, db, want)
		}
		if d := ta.Sub(tb).Abs(); d > 40*time.Millisecond {
			t.Errorf("step %d: peers released %v apart", step, d)
		}
	}
}

func TestPairPreSharedCode(t *testing.T) {
	l, srv, _ := lab(t)
	ctx, cancel := context.WithTimeout(context.Background(), testBound)
	defer cancel()
	a, b := dial(t, l, "a", srv), dial(t, l, "b", srv)
	ra, rb := pairBoth(ctx, a, b, rendezvous.Meet, rendezvous.Meet, "ABCD-EFGH-IJKL-MNOP")
	if ra.err != nil || rb.err != nil {
		t.Fatalf("meet: a=%v b=%v", ra.err, rb.err)
	}
	if a.Code() != "abcdefghijklmnop" {
		t.Errorf("code not normalised: %q", a.Code())
	}
	// pairBoth enters a first: it is slot 1 whichever mode both used.
	if ra.peer.Slot != 1 || rb.peer.Slot != 2 {
		t.Errorf("slots: first %d, second %d; want 1, 2", ra.peer.Slot, rb.peer.Slot)
	}
}

func TestPairFaults(t *testing.T) {
	l, srv, restart := lab(t)
	ctx, cancel := context.WithTimeout(context.Background(), testBound)
	defer cancel()

	t.Run("unknown code", func(t *testing.T) {
		c := dial(t, l, "a", srv)
		code, _ := rendezvous.NewCode()
		_, err := c.Pair(ctx, rendezvous.Join, code, nil, nil)
		var se *rendezvous.ServerError
		if !errors.As(err, &se) || !strings.Contains(err.Error(), "unknown or expired") {
			t.Fatalf("got %v, want unknown-code error", err)
		}
	})
	t.Run("malformed code", func(t *testing.T) {
		c := dial(t, l, "a", srv)
		if _, err := c.Pair(ctx, rendezvous.Join, "1234", nil, nil); !errors.Is(err, rendezvous.ErrBadCode) {
			t.Fatalf("got %v, want ErrBadCode", err)
		}
	})
	t.Run("third peer", func(t *testing.T) {
		a, b, c := dial(t, l, "a", srv), dial(t, l, "b", srv), dial(t, l, "b", srv)
		code, _ := rendezvous.NewCode()
		if ra, rb := pairBoth(ctx, a, b, rendezvous.Create, rendezvous.Join, code); ra.err != nil || rb.err != nil {
			t.Fatalf("pair: %v %v", ra.err, rb.err)
		}
		_, err := c.Pair(ctx, rendezvous.Join, code, nil, nil)
		if err == nil || !strings.Contains(err.Error(), "two peers") {
			t.Fatalf("third peer: got %v", err)
		}
	})
	t.Run("peer vanishes", func(t *testing.T) {
		a, b := dial(t, l, "a", srv), dial(t, l, "b", srv)
		code, _ := rendezvous.NewCode()
		if ra, rb := pairBoth(ctx, a, b, rendezvous.Create, rendezvous.Join, code); ra.err != nil || rb.err != nil {
			t.Fatalf("pair: %v %v", ra.err, rb.err)
		}
		b.Close()
		_, err := a.Step(ctx, 1, nil)
		if err == nil || !strings.Contains(err.Error(), "left") {
			t.Fatalf("got %v, want peer-left error", err)
		}
	})
	t.Run("server restarts", func(t *testing.T) {
		a, b := dial(t, l, "a", srv), dial(t, l, "b", srv)
		code, _ := rendezvous.NewCode()
		if ra, rb := pairBoth(ctx, a, b, rendezvous.Create, rendezvous.Join, code); ra.err != nil || rb.err != nil {
			t.Fatalf("pair: %v %v", ra.err, rb.err)
		}
		restart()
		_, err := a.Step(ctx, 1, nil)
		if err == nil || !strings.Contains(err.Error(), "restart") {
			t.Fatalf("got %v, want a restart hint", err)
		}
	})
	t.Run("server silent", func(t *testing.T) {
		c, err := rendezvous.Dial(l.Site("a").Host.Net, "203.0.113.11:9")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Silence = 300 * time.Millisecond
		code, _ := rendezvous.NewCode()
		start := time.Now()
		if _, err := c.Pair(ctx, rendezvous.Create, code, nil, nil); !errors.Is(err, rendezvous.ErrServerSilent) {
			t.Fatalf("got %v, want ErrServerSilent", err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("gave up after %v", d)
		}
	})
	t.Run("context ends", func(t *testing.T) {
		c := dial(t, l, "a", srv)
		code, _ := rendezvous.NewCode()
		short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		if _, err := c.Pair(short, rendezvous.Create, code, nil, nil); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("got %v, want deadline", err)
		}
	})
}

func TestRegistryExpiryAndLimits(t *testing.T) {
	now := time.Unix(1000, 0)
	reg := rendezvous.NewRegistry(func() time.Time { return now })
	from := netip.MustParseAddrPort("198.51.100.10:4000")
	tok := strings.Repeat("ab", 16)
	msg := func(m rendezvous.Message) []byte {
		b, err := rendezvous.Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	reply := func(b []byte) rendezvous.Message {
		out := reg.Handle(b, from)
		if len(out) != 1 {
			t.Fatalf("got %d replies, want 1", len(out))
		}
		m, err := rendezvous.Decode(out[0].Raw)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	code := "abcdefghijklmnop"
	if m := reply(msg(rendezvous.Message{Type: rendezvous.TypeCreate, Code: code, Token: tok})); m.Type != rendezvous.TypeWait {
		t.Fatalf("create: %+v", m)
	}
	now = now.Add(rendezvous.CodeTTL + time.Second)
	if m := reply(msg(rendezvous.Message{Type: rendezvous.TypeJoin, Code: code, Token: strings.Repeat("cd", 16)})); m.Type != rendezvous.TypeError || !strings.Contains(m.Error, "expired") {
		t.Fatalf("join after expiry: %+v", m)
	}
	if reg.Stats().Pairings != 0 {
		t.Errorf("expired pairing kept: %+v", reg.Stats())
	}
	big := json.RawMessage(`"` + strings.Repeat("x", 1100) + `"`)
	if m := reply(msg(rendezvous.Message{Type: rendezvous.TypeCreate, Code: code, Token: tok, Info: big})); m.Type != rendezvous.TypeError || !strings.Contains(m.Error, "too large") {
		t.Errorf("oversized info: %+v", m)
	}
	huge := json.RawMessage(`"` + strings.Repeat("x", 1500) + `"`)
	if _, err := rendezvous.Encode(rendezvous.Message{Type: rendezvous.TypeCreate, Code: code, Token: tok, Info: huge}); err == nil {
		t.Error("message over MaxMessage encoded")
	}
	for _, garbage := range [][]byte{nil, {0, 1, 0, 0}, []byte("{"), []byte(`{"v":1}`), []byte("hello")} {
		out := reg.Handle(garbage, from)
		if len(garbage) > 0 && garbage[0] == '{' && len(garbage) > 1 && strings.Contains(string(garbage), `"v":1`) {
			continue // a well-formed message with a bad code gets an error: fine
		}
		if len(out) != 0 {
			t.Errorf("garbage %q answered", garbage)
		}
	}
}

func FuzzRegistryHandle(f *testing.F) {
	f.Add([]byte(`{"v":1,"t":"create","code":"abcdefghijklmnop","token":"abababababababababababababababab"}`))
	f.Add([]byte(`{"v":1,"t":"step","code":"abcdefghijklmnop","token":"abababababababababababababababab","step":1}`))
	f.Add([]byte{0, 1, 0, 8})
	reg := rendezvous.NewRegistry(nil)
	from := netip.MustParseAddrPort("198.51.100.10:4000")
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, o := range reg.Handle(b, from) {
			if len(o.Raw) > rendezvous.MaxMessage {
				t.Fatalf("reply of %d bytes", len(o.Raw))
			}
			if !rendezvous.IsRendezvous(o.Raw) {
				t.Fatalf("reply is not a rendezvous message: %q", o.Raw)
			}
		}
	})
}
