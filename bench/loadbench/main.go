// Command loadbench is bench/load.sh's load generator: it floods a running
// natlab serve on loopback from several attacker addresses (127.0.0.2–6)
// while legitimate clients (127.0.0.1, 127.0.0.10–21) measure what they
// still get, and prints one JSON line with both and the server's peak RSS.
//
// Attacks, each bounded in rate and time:
//   - binding: Binding requests from 4 sockets of 127.0.0.2, -flood a second
//   - creates: rendezvous creates with fresh codes from 127.0.0.3
//   - steps:   rendezvous steps for codes that do not exist, from 127.0.0.3
//   - idle:    TCP connections from 127.0.0.4, each sending one
//     unauthenticated Allocate and then nothing (-idle of them)
//   - frames:  TCP connections from 127.0.0.5 sending an Allocate and a
//     ChannelData frame longer than any datagram
//   - rzflood: pairings from 127.0.0.6 that fill its per-source cap
//
// Legitimate clients: 10 UDP and 2 TCP Binding clients sending one request
// every 20 ms, rendezvous pairings with two steps, and TURN allocations.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v3"

	"github.com/natlab/natlab/internal/millis"
)

// Timing of the legitimate clients, each with why.
const (
	// legitInterval is how often a legitimate client asks: 50 a second,
	// a busy natlab check.
	legitInterval = 20 * time.Millisecond
	// legitTimeout is when an unanswered request counts as lost: a
	// loopback server answers in microseconds, a loaded one in
	// milliseconds; STUN clients retransmit after 500 ms.
	legitTimeout = 500 * time.Millisecond
)

type options struct {
	server string
	pid    int
	dur    time.Duration
	flood  int // Binding flood, datagrams a second
	idle   int // idle TCP connections attempted
	user   string
	pass   string
}

func main() {
	var o options
	flag.StringVar(&o.server, "server", "127.0.0.1:3478", "natlab serve's host:port (loopback)")
	flag.IntVar(&o.pid, "pid", 0, "the server's process id, for its peak RSS")
	flag.DurationVar(&o.dur, "time", 10*time.Second, "how long the attack lasts")
	flag.IntVar(&o.flood, "flood", 50000, "Binding flood, datagrams a second")
	flag.IntVar(&o.idle, "idle", 2000, "idle TCP connections attempted")
	flag.StringVar(&o.user, "user", "alice", "TURN user")
	flag.StringVar(&o.pass, "pass", "wonderland", "TURN password")
	flag.Parse()
	res, err := run(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadbench:", err)
		os.Exit(1)
	}
	b, _ := json.Marshal(res)
	fmt.Println(string(b))
}

// result is the JSON line.
type result struct {
	Seconds     float64          `json:"seconds"`
	Attack      map[string]int64 `json:"attack"` // messages or connections sent, by attack
	Binding     legitStats       `json:"binding"`
	BindingTCP  legitStats       `json:"binding_tcp"`
	Pairings    legitCount       `json:"pairings"`
	Allocations legitCount       `json:"allocations"`
	PeakRSSMiB  float64          `json:"server_peak_rss_mib"`
}

type legitStats struct {
	Sent     int64   `json:"sent"`
	Answered int64   `json:"answered"`
	Pct      float64 `json:"answered_pct"`
	P50ms    float64 `json:"p50_ms"`
	P99ms    float64 `json:"p99_ms"`
}

type legitCount struct {
	Tried int64 `json:"tried"`
	OK    int64 `json:"ok"`
}

func run(o options) (result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), o.dur)
	defer cancel()
	var rss rssWatch
	rss.start(o.pid)
	atk := &attackCounts{m: map[string]*atomic.Int64{}}
	var wg sync.WaitGroup
	spawn := func(f func()) { wg.Add(1); go func() { defer wg.Done(); f() }() }
	spawn(func() { floodBinding(ctx, o, atk) })
	spawn(func() { floodRendezvous(ctx, o, atk) })
	spawn(func() { idleTCP(ctx, o, atk) })
	spawn(func() { oversizedFrames(ctx, o, atk) })
	// Legitimate clients start once the attacks are under way.
	time.Sleep(min(500*time.Millisecond, o.dur/4))
	var udp, tcp latencies
	for i := range 10 {
		spawn(func() { legitBinding(ctx, o.server, "127.0.0."+strconv.Itoa(10+i), false, &udp) })
	}
	for i := range 2 {
		spawn(func() { legitBinding(ctx, o.server, "127.0.0."+strconv.Itoa(20+i), true, &tcp) })
	}
	var pairs, allocs legitCount
	spawn(func() { legitPairings(ctx, o.server, &pairs) })
	spawn(func() { legitAllocations(ctx, o, &allocs) })
	start := time.Now()
	wg.Wait()
	return result{
		Seconds: time.Since(start).Seconds(), Attack: atk.snapshot(),
		Binding: udp.stats(), BindingTCP: tcp.stats(), Pairings: pairs, Allocations: allocs,
		PeakRSSMiB: rss.stop(),
	}, nil
}

type attackCounts struct {
	mu sync.Mutex
	m  map[string]*atomic.Int64
}

func (a *attackCounts) counter(name string) *atomic.Int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.m[name] == nil {
		a.m[name] = &atomic.Int64{}
	}
	return a.m[name]
}

func (a *attackCounts) snapshot() map[string]int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[string]int64{}
	for k, v := range a.m {
		out[k] = v.Load()
	}
	return out
}

// latencies collects the legitimate clients' answers.
type latencies struct {
	mu   sync.Mutex
	sent int64
	got  []time.Duration
}

func (l *latencies) add(sent bool, d time.Duration, answered bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if sent {
		l.sent++
	}
	if answered {
		l.got = append(l.got, d)
	}
}

func (l *latencies) stats() legitStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := legitStats{Sent: l.sent, Answered: int64(len(l.got))}
	if l.sent > 0 {
		s.Pct = round2(100 * float64(s.Answered) / float64(l.sent))
	}
	sort.Slice(l.got, func(i, j int) bool { return l.got[i] < l.got[j] })
	if n := len(l.got); n > 0 {
		s.P50ms = ms(l.got[n/2])
		s.P99ms = ms(l.got[min(n-1, n*99/100)])
	}
	return s
}

func ms(d time.Duration) float64     { return round2(millis.Of(d)) }
func round2(f float64) float64       { return float64(int64(f*100+0.5)) / 100 }
func udpFrom(ip string) *net.UDPAddr { return &net.UDPAddr{IP: net.ParseIP(ip)} }

// legitBinding asks every legitInterval and waits for each answer.
func legitBinding(ctx context.Context, server, src string, overTCP bool, l *latencies) {
	var c net.Conn
	var err error
	if overTCP {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: legitTimeout}
		c, err = d.DialContext(ctx, "tcp4", server)
	} else {
		d := net.Dialer{LocalAddr: udpFrom(src)}
		c, err = d.DialContext(ctx, "udp4", server)
	}
	if err != nil {
		l.add(true, 0, false)
		return
	}
	defer c.Close()
	buf := make([]byte, 1500)
	tick := time.NewTicker(legitInterval)
	defer tick.Stop()
	for ctx.Err() == nil {
		req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
		t0 := time.Now()
		_ = c.SetDeadline(t0.Add(legitTimeout))
		ok := false
		if _, err := c.Write(req.Raw); err == nil {
			ok = readAnswer(c, buf, req.TransactionID, overTCP)
		}
		l.add(true, time.Since(t0), ok)
		if !ok && overTCP {
			return // the stream cannot be resynchronised; the loss is counted
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
}

func readAnswer(c net.Conn, buf []byte, id [stun.TransactionIDSize]byte, overTCP bool) bool {
	for {
		n, err := c.Read(buf)
		if err != nil {
			return false
		}
		if overTCP && n < 20 {
			continue
		}
		m := &stun.Message{Raw: buf[:n]}
		if m.Decode() == nil && m.TransactionID == id {
			return true
		}
	}
}

// rssWatch samples the server's resident set every 100 ms and also reads
// the kernel's high-water mark.
type rssWatch struct {
	pid  int
	stop func() float64
}

func (w *rssWatch) start(pid int) {
	done := make(chan struct{})
	var peak atomic.Int64
	go func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			peak.Store(max(peak.Load(), statusKiB(pid, "VmRSS:")))
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	w.stop = func() float64 {
		close(done)
		kib := max(peak.Load(), statusKiB(pid, "VmHWM:"))
		return round2(float64(kib) / 1024)
	}
}

// statusKiB reads a "Name: N kB" line of /proc/PID/status; 0 if absent.
func statusKiB(pid int, name string) int64 {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == name {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			return v
		}
	}
	return 0
}
