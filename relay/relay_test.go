package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pion/transport/v4/stdnet"

	"github.com/natlab/natlab/internal/leakcheck"
	"github.com/natlab/natlab/server"
)

// testTimeout bounds a whole loopback test: allocation and measurement
// take well under a second there.
const testTimeout = 20 * time.Second

const testUser, testPass = "alice", "wonderland"

// startServer runs natlab's STUN+TURN server on loopback, relaying to
// loopback (refused by default) on purpose.
func startServer(t *testing.T, withTLS bool) *server.Server {
	t.Helper()
	return startServerOn(t, netip.MustParseAddrPort("127.0.0.1:0"), withTLS)
}

// startServerOn is startServer on the given primary address.
func startServerOn(t *testing.T, primary netip.AddrPort, withTLS bool) *server.Server {
	t.Helper()
	n, err := stdnet.NewNet()
	if err != nil {
		t.Fatal(err)
	}
	tc := &server.TURNConfig{
		Users: map[string]string{testUser: testPass},
		Peers: server.PeerPolicy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}},
	}
	if withTLS {
		cert, err := server.SelfSignedCert("natlab test", []netip.Addr{primary.Addr()})
		if err != nil {
			t.Fatal(err)
		}
		tc.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		tc.TLSAddr = netip.AddrPortFrom(primary.Addr(), 0)
	}
	srv, err := server.Listen(n, server.Config{Addrs: server.Addrs{Primary: primary}, TURN: tc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv
}

func TestRelayLoopback(t *testing.T) {
	for _, tr := range []Transport{UDP, TCP, TLS} {
		t.Run(string(tr), func(t *testing.T) {
			leakcheck.Check(t)
			srv := startServer(t, tr == TLS)
			addr := srv.Addrs().Primary.String()
			if tr == TLS {
				ap, _ := srv.TURNTLSAddr()
				addr = ap.String()
			}
			n, _ := stdnet.NewNet()
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			opts := AllocOptions{Net: n, Server: addr, Transport: tr, Username: testUser, Password: testPass,
				TLSConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // a self-signed test certificate
			var allocs [2]*Allocation
			for i := range allocs {
				a, err := Allocate(ctx, opts)
				if err != nil {
					t.Fatal(err)
				}
				defer a.Close()
				allocs[i] = a
				if a.AllocTime <= 0 || !a.Relayed.IsValid() {
					t.Fatalf("allocation %+v", a)
				}
			}
			if st, _ := srv.TURNStats(); st.Allocations != 2 {
				t.Errorf("server counts %d allocations, want 2", st.Allocations)
			}
			figs := measurePair(t, ctx, allocs[0], allocs[1], MeasureOptions{BurstBytes: 1 << 20, Tag: 7})
			for i, f := range figs {
				t.Logf("side %d over %s: %+v", i, tr, f)
				if f.Echoes < DefaultEchoes || f.RTTMedianMillis <= 0 || f.ThroughputInMbps <= 0 || !f.PeerReported || f.ThroughputOutMbps <= 0 {
					t.Errorf("side %d figures %+v", i, f)
				}
			}
		})
	}
}

// measurePair lets both allocations permit each other and measure at once.
func measurePair(t *testing.T, ctx context.Context, a, b *Allocation, o MeasureOptions) [2]Figures {
	t.Helper()
	if err := a.Permit(ctx, b.Relayed); err != nil {
		t.Fatal(err)
	}
	if err := b.Permit(ctx, a.Relayed); err != nil {
		t.Fatal(err)
	}
	return measureConns(t, ctx, [2]net.PacketConn{a.Conn, b.Conn}, [2]netip.AddrPort{b.Relayed, a.Relayed}, o)
}

func measureConns(t *testing.T, ctx context.Context, conns [2]net.PacketConn, remotes [2]netip.AddrPort, o MeasureOptions) [2]Figures {
	t.Helper()
	var (
		figs [2]Figures
		errs [2]error
		wg   sync.WaitGroup
	)
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			figs[i], errs[i] = Measure(ctx, conns[i], net.UDPAddrFromAddrPort(remotes[i]), o)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("side %d: %v", i, err)
		}
	}
	return figs
}

// A direct UDP path measures with the same code, so the two compare.
func TestMeasureDirect(t *testing.T) {
	var conns [2]net.PacketConn
	var remotes [2]netip.AddrPort
	for i := range conns {
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns[i] = c
	}
	remotes[0] = conns[1].LocalAddr().(*net.UDPAddr).AddrPort()
	remotes[1] = conns[0].LocalAddr().(*net.UDPAddr).AddrPort()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	figs := measureConns(t, ctx, conns, remotes, MeasureOptions{BurstBytes: 1 << 20})
	for _, f := range figs {
		if f.Echoes < DefaultEchoes || f.ThroughputMbps <= 0 {
			t.Errorf("figures %+v", f)
		}
	}
	c := Compare(figs[0], Figures{RTTMedianMillis: figs[0].RTTMedianMillis + 10, ThroughputMbps: figs[0].ThroughputMbps / 2})
	if c.RTTSavedMillis != 10 || c.ThroughputGainPercent < 99 || c.ThroughputGainPercent > 101 {
		t.Errorf("cost %+v", c)
	}
	t.Log(c.Summary)
}

// A silent peer is ErrNoEcho, within the echo phase's bound.
func TestMeasureNoPeer(t *testing.T) {
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sink, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	start := time.Now()
	_, err = Measure(context.Background(), c, sink.LocalAddr(), MeasureOptions{Echoes: 3, EchoInterval: 10 * time.Millisecond})
	if err == nil || !isNoEcho(err) {
		t.Fatalf("err %v, want ErrNoEcho", err)
	}
	if d := time.Since(start); d > echoGrace+time.Second {
		t.Errorf("took %v", d)
	}
}

func isNoEcho(err error) bool { return errors.Is(err, ErrNoEcho) }
