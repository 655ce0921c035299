// Command relaybench is bench/relay.sh's load generator: the same client
// against natlab serve and coturn. "turn" relays between two allocations
// on the server (relay-to-relay, natlab's relay.Measure) and prints RTT and
// throughput; "stun" sends Binding requests from several sockets, each
// with a window of outstanding requests, and prints responses per second.
// It prints one JSON line.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v3"
	"github.com/pion/transport/v4/stdnet"

	"github.com/natlab/natlab/relay"
)

// runTimeout bounds one whole run: the bursts are bounded by -time, the
// rest takes milliseconds on loopback.
const runTimeout = 2 * time.Minute

// stunLost is when an unanswered Binding request is given up and
// replaced: a loopback server answers in microseconds, so it was dropped.
const stunLost = 200 * time.Millisecond

func main() {
	mode := flag.String("mode", "turn", "turn or stun")
	server := flag.String("server", "127.0.0.1:3478", "server host:port")
	user := flag.String("user", "alice", "TURN user")
	pass := flag.String("pass", "wonderland", "TURN password")
	transport := flag.String("transport", "udp", "TURN transport: udp, tcp or tls")
	bytes := flag.Int("bytes", 64<<20, "burst bound in bytes (each side)")
	dur := flag.Duration("time", 3*time.Second, "burst and STUN load duration")
	runs := flag.Int("runs", 3, "TURN runs (the best is printed, as iperf users do)")
	sockets := flag.Int("sockets", 8, "STUN client sockets")
	window := flag.Int("window", 32, "outstanding STUN requests per socket")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	var (
		out any
		err error
	)
	switch *mode {
	case "turn":
		out, err = benchTURN(ctx, *server, *user, *pass, relay.Transport(*transport), *bytes, *dur, *runs)
	case "stun":
		out, err = benchSTUN(ctx, *server, *sockets, *window, *dur)
	default:
		err = fmt.Errorf("-mode %q: want turn or stun", *mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "relaybench:", err)
		os.Exit(1)
	}
	b, _ := json.Marshal(out)
	fmt.Println(string(b))
}

type turnResult struct {
	RTTMedianMillis float64 `json:"rtt_median_ms"`
	RTTP95Millis    float64 `json:"rtt_p95_ms"`
	// ThroughputMbps is what the relay carried in both directions at
	// once (the sum of what each side received).
	ThroughputMbps float64 `json:"throughput_mbps"`
	LostPercent    float64 `json:"lost_pct"`
}

func benchTURN(ctx context.Context, server, user, pass string, tr relay.Transport, bytes int, dur time.Duration, runs int) (turnResult, error) {
	var best turnResult
	for r := 0; r < runs; r++ {
		res, err := turnOnce(ctx, server, user, pass, tr, bytes, dur, uint64(r+1))
		if err != nil {
			return best, err
		}
		if res.ThroughputMbps > best.ThroughputMbps {
			best = res
		}
	}
	return best, nil
}

func turnOnce(ctx context.Context, server, user, pass string, tr relay.Transport, bytes int, dur time.Duration, tag uint64) (turnResult, error) {
	n, err := stdnet.NewNet()
	if err != nil {
		return turnResult{}, err
	}
	var allocs [2]*relay.Allocation
	for i := range allocs {
		a, err := relay.Allocate(ctx, relay.AllocOptions{Net: n, Server: server, Transport: tr, Username: user, Password: pass})
		if err != nil {
			return turnResult{}, err
		}
		defer a.Close()
		allocs[i] = a
	}
	for i, a := range allocs {
		if err := a.Permit(ctx, allocs[1-i].Relayed); err != nil {
			return turnResult{}, err
		}
	}
	var (
		figs [2]relay.Figures
		errs [2]error
		wg   sync.WaitGroup
	)
	for i, a := range allocs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			figs[i], errs[i] = relay.Measure(ctx, a.Conn, net.UDPAddrFromAddrPort(allocs[1-i].Relayed),
				relay.MeasureOptions{Echoes: 50, BurstBytes: bytes, BurstTime: dur, Tag: tag})
		}()
	}
	wg.Wait()
	if err := errors.Join(errs[:]...); err != nil {
		return turnResult{}, err
	}
	return turnResult{
		RTTMedianMillis: round2((figs[0].RTTMedianMillis + figs[1].RTTMedianMillis) / 2),
		RTTP95Millis:    max(figs[0].RTTP95Millis, figs[1].RTTP95Millis),
		ThroughputMbps:  round2(figs[0].ThroughputInMbps + figs[1].ThroughputInMbps),
		LostPercent:     round2((figs[0].LostInPercent + figs[1].LostInPercent) / 2),
	}, nil
}

func round2(f float64) float64 { return math.Round(f*100) / 100 }

type stunResult struct {
	ResponsesPerSecond float64 `json:"responses_per_s"`
	Sent               uint64  `json:"sent"`
	Answered           uint64  `json:"answered"`
}

// benchSTUN keeps `window` Binding requests outstanding on each socket for
// dur and counts the answers.
func benchSTUN(ctx context.Context, server string, sockets, window int, dur time.Duration) (stunResult, error) {
	to, err := net.ResolveUDPAddr("udp", server)
	if err != nil {
		return stunResult{}, err
	}
	network, local := "udp4", net.IPv4(127, 0, 0, 1)
	if to.IP.To4() == nil {
		network, local = "udp6", net.IPv6loopback
	}
	var sent, answered atomic.Uint64
	ctx, cancel := context.WithTimeout(ctx, dur)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, sockets)
	start := time.Now()
	for range sockets {
		c, err := net.ListenUDP(network, &net.UDPAddr{IP: local})
		if err != nil {
			return stunResult{}, err
		}
		defer c.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			send := func() error {
				m := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
				sent.Add(1)
				_, err := c.WriteTo(m.Raw, to)
				return err
			}
			for range window {
				if err := send(); err != nil {
					errc <- err
					return
				}
			}
			buf := make([]byte, 1500)
			for ctx.Err() == nil {
				_ = c.SetReadDeadline(time.Now().Add(stunLost))
				n, _, err := c.ReadFrom(buf)
				var ne net.Error
				switch {
				case err == nil && stun.IsMessage(buf[:n]):
					answered.Add(1)
				case errors.As(err, &ne) && ne.Timeout():
					// The window's requests were lost; refill it.
					for range window {
						_ = send()
					}
					continue
				case err != nil:
					errc <- err
					return
				default:
					continue
				}
				if err := send(); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	select {
	case err := <-errc:
		return stunResult{}, err
	default:
	}
	a := answered.Load()
	return stunResult{ResponsesPerSecond: float64(int(float64(a)/elapsed.Seconds()*10)) / 10, Sent: sent.Load(), Answered: a}, nil
}
