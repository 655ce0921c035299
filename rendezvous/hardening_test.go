package rendezvous_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/natlab/natlab/internal/leakcheck"
	"github.com/natlab/natlab/rendezvous"
)

// peerMsg builds one message of a test peer.
func peerMsg(t *testing.T, typ, code, tok string, step int, rtt float64, data string) []byte {
	t.Helper()
	m := rendezvous.Message{Type: typ, Code: code, Token: tok, Step: step, RTT: rtt}
	if data != "" {
		m.Data = json.RawMessage(data)
	}
	b, err := rendezvous.Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const (
	testCode = "abcdefghijklmnop"
	tokA     = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	tokB     = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

// Vulnerability 4 of issue 11: rtt_ms came from the client unclamped
// and delayed a "go" message by half the difference, so rtt_ms 1e12 parked
// a timer (and its datagram) for years. The delay is now bounded by
// MaxAlignDelay, and the pairing's timers stop when it expires.
func TestStepDelayClamped(t *testing.T) {
	now := time.Unix(1000, 0)
	reg := rendezvous.NewRegistry(func() time.Time { return now })
	a, b := netip.MustParseAddrPort("198.51.100.1:1000"), netip.MustParseAddrPort("198.51.100.2:2000")
	reg.Handle(peerMsg(t, rendezvous.TypeCreate, testCode, tokA, 0, 0, ""), a)
	reg.Handle(peerMsg(t, rendezvous.TypeJoin, testCode, tokB, 0, 0, ""), b)
	reg.Handle(peerMsg(t, rendezvous.TypeStep, testCode, tokA, 1, 1e12, `"x"`), a)
	out := reg.Handle(peerMsg(t, rendezvous.TypeStep, testCode, tokB, 1, 0, `"y"`), b)
	if len(out) != 2 {
		t.Fatalf("step released %d messages, want 2", len(out))
	}
	for _, o := range out {
		if o.Delay < 0 || o.Delay > rendezvous.MaxAlignDelay {
			t.Errorf("go to %s delayed %v, over %v", o.To, o.Delay, rendezvous.MaxAlignDelay)
		}
	}
}

// Delayed messages belong to their pairing: when it expires, its timers
// are stopped, and nothing is left behind.
func TestTimersStopWithPairing(t *testing.T) {
	leakcheck.Check(t)
	var now clock
	now.set(time.Now())
	reg := rendezvous.NewRegistry(now.get)
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	a, b := netip.MustParseAddrPort("127.0.0.1:9"), netip.MustParseAddrPort("127.0.0.1:10")
	reg.Send(pc, reg.Handle(peerMsg(t, rendezvous.TypeCreate, testCode, tokA, 0, 0, ""), a))
	reg.Send(pc, reg.Handle(peerMsg(t, rendezvous.TypeJoin, testCode, tokB, 0, 0, ""), b))
	reg.Send(pc, reg.Handle(peerMsg(t, rendezvous.TypeStep, testCode, tokA, 1, 1e6, `"x"`), a))
	reg.Send(pc, reg.Handle(peerMsg(t, rendezvous.TypeStep, testCode, tokB, 1, 0, `"y"`), b))
	if got := reg.Stats().Timers; got != 1 {
		t.Fatalf("%d timers pending, want 1", got)
	}
	now.set(now.get().Add(rendezvous.CodeTTL + time.Second))
	reg.Handle(peerMsg(t, rendezvous.TypeCreate, "bbbbbbbbbbbbbbbb", tokA, 0, 0, ""), a) // runs expiry
	if st := reg.Stats(); st.Timers != 0 || st.Pairings != 1 {
		t.Errorf("after expiry: %+v", st)
	}
}

// Vulnerability 5 of issue 11: the server wrote to TCP peers from the
// UDP read loop, waiting up to 5 s per write, so a TCP peer that never
// reads stalled every UDP client of the socket. Send must not wait for a
// stream peer; a peer that does not read is dropped once its queue fills.
func TestStreamPeerThatNeverReads(t *testing.T) {
	leakcheck.Check(t)
	reg := rendezvous.NewRegistryLimits(nil, rendezvous.Limits{Rate: -1})
	srvSide, peer := net.Pipe() // unbuffered: every write waits for a read
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer srvSide.Close()
		reg.ServeStream(srvSide, nil)
	}()
	defer func() { peer.Close(); <-done }()
	if _, err := peer.Write(append(peerMsg(t, rendezvous.TypeCreate, testCode, tokA, 0, 0, ""), '\n')); err != nil {
		t.Fatal(err)
	}
	// Read the "wait" answer, then never read again.
	_ = peer.SetReadDeadline(time.Now().Add(testBound))
	if _, err := bufio.NewReader(peer).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	b := netip.MustParseAddrPort("127.0.0.1:9")
	info := `"` + strings.Repeat("i", 900) + `"`
	join := rendezvous.Message{Type: rendezvous.TypeJoin, Code: testCode, Token: tokB, Info: json.RawMessage(info)}
	raw, err := rendezvous.Encode(join)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for range 200 { // each join retransmission tells the TCP peer again
		reg.Send(pc, reg.Handle(raw, b))
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("200 UDP messages took %v: the UDP side waited for a TCP peer that does not read", d)
	}
}

// clock is a settable time source safe for the registry's timers.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

func (c *clock) get() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

// One source can no longer fill the pairing table and lock everyone out:
// it gets PairingsPerSource, others still get theirs.
func TestPairingsPerSource(t *testing.T) {
	reg := rendezvous.NewRegistryLimits(nil, rendezvous.Limits{Rate: -1, PairingsPerSource: 3})
	flood := netip.MustParseAddr("198.51.100.66")
	for i := range 5 {
		code, _ := rendezvous.NewCode()
		out := reg.Handle(peerMsg(t, rendezvous.TypeCreate, code, tokA, 0, 0, ""), netip.AddrPortFrom(flood, uint16(1000+i)))
		m, _ := rendezvous.Decode(out[0].Raw)
		if want := i < 3; (m.Type == rendezvous.TypeWait) != want {
			t.Errorf("create %d from one source: %s %s", i, m.Type, m.Error)
		}
	}
	code, _ := rendezvous.NewCode()
	out := reg.Handle(peerMsg(t, rendezvous.TypeCreate, code, tokA, 0, 0, ""), netip.MustParseAddrPort("198.51.100.7:1"))
	if m, _ := rendezvous.Decode(out[0].Raw); m.Type != rendezvous.TypeWait {
		t.Errorf("another source was refused: %+v", m)
	}
}

// A source over its rate gets silence, and the drops are counted.
func TestRendezvousRateLimit(t *testing.T) {
	reg := rendezvous.NewRegistryLimits(nil, rendezvous.Limits{Rate: 1, Burst: 5})
	from := netip.MustParseAddrPort("198.51.100.8:1")
	answered := 0
	for range 20 {
		if len(reg.Handle(peerMsg(t, rendezvous.TypeCreate, testCode, tokA, 0, 0, ""), from)) > 0 {
			answered++
		}
	}
	if answered != 5 || reg.Stats().Limited != 15 {
		t.Errorf("%d answered, %d limited; want 5 and 15", answered, reg.Stats().Limited)
	}
}

// Answers to a datagram are at most AmplificationFactor times its size:
// a retransmitted step (tiny) to a pairing holding 1 KB of the other's
// data was answered 11.8 times larger on the wire (issue 11). A padded
// request, as clients send, gets its full answer.
func TestAmplificationBounded(t *testing.T) {
	reg := rendezvous.NewRegistryLimits(nil, rendezvous.Limits{Rate: -1})
	a, b := netip.MustParseAddrPort("198.51.100.1:1000"), netip.MustParseAddrPort("198.51.100.2:2000")
	big := `"` + strings.Repeat("d", 1000) + `"`
	reg.Handle(peerMsg(t, rendezvous.TypeCreate, testCode, tokA, 0, 0, ""), a)
	reg.Handle(peerMsg(t, rendezvous.TypeJoin, testCode, tokB, 0, 0, ""), b)
	reg.Handle(peerMsg(t, rendezvous.TypeStep, testCode, tokA, 1, 0, big), a)
	reg.Handle(peerMsg(t, rendezvous.TypeStep, testCode, tokB, 1, 0, ""), b)
	for _, req := range [][]byte{
		peerMsg(t, rendezvous.TypeStep, testCode, tokB, 1, 0, ""), // the retransmission
		[]byte(`{"v":1}`),
		[]byte(`{"v":2}`),
	} {
		for _, o := range reg.Handle(req, b) {
			if len(o.Raw) > rendezvous.AmplificationFactor*len(req) {
				t.Errorf("%d-byte request answered with %d bytes", len(req), len(o.Raw))
			}
		}
	}
	padded, err := rendezvous.EncodeRequest(rendezvous.Message{Type: rendezvous.TypeStep, Code: testCode, Token: tokB, Step: 1})
	if err != nil || len(padded) < rendezvous.MinRequest {
		t.Fatalf("padded request: %d bytes, %v", len(padded), err)
	}
	out := reg.Handle(padded, b)
	if len(out) != 1 || !strings.Contains(string(out[0].Raw), strings.Repeat("d", 1000)) {
		t.Errorf("a padded retransmission did not get the other's data: %v", out)
	}
	if reg.Stats().Muted == 0 {
		t.Error("no answer counted as muted")
	}
}

// A pairing both peers said bye to no longer counts against its
// creator's cap; it lingers briefly so a late peer learns it is over.
func TestByeFreesPairing(t *testing.T) {
	reg := rendezvous.NewRegistryLimits(nil, rendezvous.Limits{Rate: -1, PairingsPerSource: 1})
	a, b := netip.MustParseAddrPort("198.51.100.1:1000"), netip.MustParseAddrPort("198.51.100.2:2000")
	reg.Handle(peerMsg(t, rendezvous.TypeCreate, testCode, tokA, 0, 0, ""), a)
	reg.Handle(peerMsg(t, rendezvous.TypeJoin, testCode, tokB, 0, 0, ""), b)
	reg.Handle(peerMsg(t, rendezvous.TypeBye, testCode, tokA, 0, 0, ""), a)
	create := func() string {
		out := reg.Handle(peerMsg(t, rendezvous.TypeCreate, "qrstuvwxyz234567", tokA, 0, 0, ""), a)
		m, _ := rendezvous.Decode(out[0].Raw)
		return m.Type
	}
	if typ := create(); typ != rendezvous.TypeError {
		t.Fatalf("a second pairing while the first is live: %s, want an error", typ)
	}
	reg.Handle(peerMsg(t, rendezvous.TypeBye, testCode, tokB, 0, 0, ""), b)
	if typ := create(); typ != rendezvous.TypeWait {
		t.Errorf("a new pairing after both left the first: %s, want wait", typ)
	}
	out := reg.Handle(peerMsg(t, rendezvous.TypeJoin, testCode, strings.Repeat("c", 32), 0, 0, ""), b)
	if m, _ := rendezvous.Decode(out[0].Raw); !strings.Contains(m.Error, "left") {
		t.Errorf("a late third peer: %+v", m)
	}
}

// maxPairingBytes is the stated bound of one pairing's memory at its
// worst (both peers' 1 KB info, the last two steps' 1 KB data each, maps
// and structs): 10,000 pairings stay under 100 MiB.
const maxPairingBytes = 10 << 10

// A pairing driven through all MaxSteps steps with the largest data keeps
// two steps per peer (it kept all 64, ~180 KiB, issue 11).
func TestPairingMemoryBounded(t *testing.T) {
	const n = 50
	info := json.RawMessage(`"` + strings.Repeat("i", 1000) + `"`)
	data := `"` + strings.Repeat("d", 1000) + `"`
	reg := rendezvous.NewRegistryLimits(nil, rendezvous.Limits{Rate: -1, PairingsPerSource: -1})
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range n {
		code := fmt.Sprintf("%016d", i)
		code = strings.NewReplacer("0", "a", "1", "b", "8", "c", "9", "d").Replace(code)
		a := netip.AddrPortFrom(netip.MustParseAddr("198.51.100.1"), uint16(1000+i))
		b := netip.AddrPortFrom(netip.MustParseAddr("198.51.100.2"), uint16(1000+i))
		for j, tok := range []string{tokA, tokB} {
			m, _ := rendezvous.EncodeRequest(rendezvous.Message{Type: []string{rendezvous.TypeCreate, rendezvous.TypeJoin}[j], Code: code, Token: tok, Info: info})
			reg.Handle(m, []netip.AddrPort{a, b}[j])
		}
		for k := 1; k <= rendezvous.MaxSteps; k++ {
			reg.Handle(peerMsg(t, rendezvous.TypeStep, code, tokA, k, 0, data), a)
			reg.Handle(peerMsg(t, rendezvous.TypeStep, code, tokB, k, 0, data), b)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if got := reg.Stats().Pairings; got != n {
		t.Fatalf("%d pairings, want %d", got, n)
	}
	per := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / n
	t.Logf("%d bytes per pairing at its largest", per)
	if per > maxPairingBytes {
		t.Errorf("%d bytes per pairing, bound %d", per, maxPairingBytes)
	}
	runtime.KeepAlive(reg)
}
