package testnet

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkInProcessStartClose measures building and tearing down a
// two-site lab with shaped links (so link goroutines start and stop).
func BenchmarkInProcessStartClose(b *testing.B) {
	topo, err := PairTopology("port-restricted-cone", "double-nat")
	if err != nil {
		b.Fatal(err)
	}
	for i := range topo.Sites {
		topo.Sites[i].WAN = Link{Delay: 10 * time.Millisecond}
	}
	b.ReportAllocs()
	for b.Loop() {
		lab, err := Start(context.Background(), topo, InProcess)
		if err != nil {
			b.Fatal(err)
		}
		if err := lab.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkInProcessNATThroughput measures 1200-byte datagrams from a host
// through its NAT to a reader on the server, per packet and in bytes/s.
func BenchmarkInProcessNATThroughput(b *testing.B) {
	for _, name := range []string{"full-cone", "symmetric", "double-nat"} {
		b.Run(name, func(b *testing.B) {
			const size = 1200 // a typical QUIC/WebRTC datagram
			lab := startLab(b, oneSite(presetNAT(b, name)))
			sink := listenServer(b, lab)
			var got atomic.Int64
			done := make(chan struct{})
			go func() {
				defer close(done)
				buf := make([]byte, 1500)
				for {
					if _, _, err := sink.ReadFrom(buf); err != nil {
						return
					}
					got.Add(1)
				}
			}()
			c := listen(b, lab.Site("a").Host)
			dst := sink.LocalAddr().(*net.UDPAddr)
			payload := make([]byte, size)
			b.SetBytes(size)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, err := c.WriteTo(payload, dst); err != nil {
					b.Fatal(err)
				}
			}
			elapsed := b.Elapsed()
			b.StopTimer()
			// Give the reader a moment to empty the queue, then count.
			time.Sleep(20 * time.Millisecond)
			_ = sink.Close()
			<-done
			b.ReportMetric(float64(got.Load())*size/1e6/elapsed.Seconds(), "delivered-MB/s")
			// The sender outruns the reader, so the receive buffer drops
			// some, as a kernel socket would under a flood.
			b.ReportMetric(float64(b.N-int(got.Load()))/float64(b.N), "dropped/op")
		})
	}
}

// BenchmarkInProcessRoundTrip measures one request and reply through a NAT
// to the echo server: the lab's latency floor without shaping.
func BenchmarkInProcessRoundTrip(b *testing.B) {
	lab := startLab(b, oneSite(presetNAT(b, "port-restricted-cone")))
	startEcho(b, lab)
	c := listen(b, lab.Site("a").Host)
	dst := net.UDPAddrFromAddrPort(echoEndpoint(0))
	buf := make([]byte, 1500)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.WriteTo([]byte("echo"), dst); err != nil {
			b.Fatal(err)
		}
		if _, _, err := c.ReadFrom(buf); err != nil {
			b.Fatal(err)
		}
	}
}
