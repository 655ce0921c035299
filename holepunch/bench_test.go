package holepunch_test

import (
	"context"
	"testing"
	"time"

	"github.com/natlab/natlab/holepunch"
	"github.com/natlab/natlab/testnet"
)

// BenchmarkTimeToFirstPacket punches a full-cone × port-restricted-cone pair
// on each backend and reports the time to the first authenticated packet
// from the peer, the confirmed RTT and the probes sent. The kernel numbers
// include DefaultOpening, the price of the opening TTL.
func BenchmarkTimeToFirstPacket(b *testing.B) {
	for _, backend := range []testnet.Backend{testnet.InProcess, testnet.Kernel} {
		for _, ttl := range []int{0, holepunch.DefaultOpeningTTL} {
			name := string(backend) + "/opening-ttl=off"
			if ttl > 0 {
				name = string(backend) + "/opening-ttl=2"
			}
			b.Run(name, func(b *testing.B) {
				lab := startLab(b, backend, "full-cone", "port-restricted-cone")
				var ttfp, rtt time.Duration
				attempts := 0
				for b.Loop() {
					ctx, cancel := context.WithTimeout(context.Background(), pairBound)
					pa := newPeer(b, ctx, lab.Site("a").Host, nil)
					pb := newPeer(b, ctx, lab.Site("b").Host, nil)
					o := punchPair(ctx, pa, pb, ttl)
					cancel()
					if !o.ok() {
						b.Fatalf("punch failed: %v", o)
					}
					ttfp += max(o.a.TimeToFirstPacket, o.b.TimeToFirstPacket)
					rtt += o.a.RTT
					attempts += o.a.Attempts + o.b.Attempts
				}
				n := float64(b.N)
				b.ReportMetric(float64(ttfp.Microseconds())/n/1000, "ms-to-first-packet")
				b.ReportMetric(float64(rtt.Microseconds())/n/1000, "rtt-ms")
				b.ReportMetric(float64(attempts)/n, "probes")
			})
		}
	}
}
