package holepunch_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/natlab/natlab/holepunch"
	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/server"
	"github.com/natlab/natlab/testnet"
)

// labStartBound bounds building a lab: the kernel backend creates
// namespaces and nftables rules, which takes a second or two.
const labStartBound = 30 * time.Second

// The lab STUN server's ports, as lab.StartServer uses them. The
// server is started here directly so that these tests do not depend on
// the probe package, which sits above holepunch.
const (
	labSTUNPort    = 3478
	labSTUNAltPort = 3479
)

// stunServer is the lab server's primary STUN address.
var stunServer = netip.AddrPortFrom(testnet.ServerAddrs[0], labSTUNPort)

// startLab builds a two-site lab with its STUN server, skipping when the
// kernel backend is not available here.
func startLab(t testing.TB, backend testnet.Backend, presetA, presetB string) *testnet.Lab {
	t.Helper()
	topo, err := testnet.PairTopology(presetA, presetB)
	if err != nil {
		t.Fatal(err)
	}
	if backend == testnet.Kernel {
		if _, err := os.Stat("/proc/self/ns/net"); err != nil {
			t.Skipf("kernel lab: no network namespaces: %v", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), labStartBound)
	defer cancel()
	lab, err := testnet.Start(ctx, topo, backend)
	if errors.Is(err, testnet.ErrNeedPrivileges) {
		t.Skipf("kernel lab: %v", err)
	}
	if err != nil {
		t.Fatalf("start %s lab: %v", backend, err)
	}
	srv, err := server.Listen(lab.Server.Net, server.Config{Addrs: server.Addrs{
		Primary: stunServer, AltIP: lab.Server.Addrs[1], AltPort: labSTUNAltPort,
	}})
	if err != nil {
		_ = lab.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = srv.Close()
		if err := lab.Close(); err != nil {
			t.Errorf("close lab: %v", err)
		}
	})
	return lab
}

// peer is one side of a punch in a test: a fresh socket and the candidates
// the other side gets for it.
type peer struct {
	host  *testnet.Host
	conn  net.PacketConn
	srflx netip.AddrPort
	cands []holepunch.Candidate
}

// newPeer opens a fresh socket on h and learns its candidates; with
// predict, the peer's srflx is followed by predicted ports when the
// profile shows a sequential allocator. A host whose UDP is blocked gets
// only its host candidate.
func newPeer(t testing.TB, ctx context.Context, h *testnet.Host, prof *natclass.Profile) *peer {
	t.Helper()
	c, err := h.Net.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		t.Fatalf("listen on %s: %v", h.Name, err)
	}
	p := &peer{host: h, conn: c}
	port := c.LocalAddr().(*net.UDPAddr).Port
	p.cands = append(p.cands, holepunch.Candidate{Kind: holepunch.Host, Addr: netip.AddrPortFrom(h.Addr(), uint16(port))})
	if prof != nil && prof.NATType == natclass.UDPBlocked {
		return p
	}
	srflx, err := holepunch.Reflexive(ctx, c, stunServer)
	if err != nil {
		t.Logf("%s: no srflx: %v", h.Name, err)
		return p
	}
	p.srflx = srflx
	p.cands = append(p.cands, holepunch.Candidate{Kind: holepunch.Srflx, Addr: srflx})
	p.cands = append(p.cands, predictFromProfile(prof, srflx)...)
	return p
}

func profile(t testing.TB, ctx context.Context, h *testnet.Host) *natclass.Profile {
	t.Helper()
	p, err := natclass.Discover(ctx, natclass.Options{Net: h.Net, Servers: []string{stunServer.String()}})
	if err != nil {
		t.Fatalf("profile %s: %v", h.Name, err)
	}
	return p
}

// outcome is both sides' view of one punch.
type outcome struct {
	a, b       holepunch.Result
	errA, errB error
}

func (o outcome) ok() bool { return o.errA == nil && o.errB == nil }

func (o outcome) String() string {
	return fmt.Sprintf("A{%s ok=%v %v→%v attempts=%d ttfp=%v rtt=%v in %v err=%v} B{%s ok=%v %v→%v attempts=%d ttfp=%v rtt=%v in %v err=%v}",
		o.a.Technique, o.a.Success, o.a.Local, o.a.Remote, o.a.Attempts, o.a.TimeToFirstPacket, o.a.RTT, o.a.Duration.Round(time.Millisecond), o.errA,
		o.b.Technique, o.b.Success, o.b.Local, o.b.Remote, o.b.Attempts, o.b.TimeToFirstPacket, o.b.RTT, o.b.Duration.Round(time.Millisecond), o.errB)
}

// punchPair runs PunchUDP on both peers at once with candidates exchanged
// directly, closes the paths and returns both results.
func punchPair(ctx context.Context, a, b *peer, ttl int) outcome {
	return punchPairSkew(ctx, a, b, ttl, ttl, 0)
}

// punchPairSkew starts B skew after A, as a rendezvous's "go" message
// reaches two peers at different times.
func punchPairSkew(ctx context.Context, a, b *peer, ttlA, ttlB int, skew time.Duration) outcome {
	sess, err := holepunch.NewSession()
	if err != nil {
		panic(err)
	}
	var o outcome
	var pa, pb *holepunch.Path
	var wg sync.WaitGroup
	wg.Go(func() {
		pa, o.a, o.errA = holepunch.PunchUDP(ctx, holepunch.Config{Conn: a.conn, Session: sess, Remote: b.cands, OpeningTTL: ttlA})
	})
	wg.Go(func() {
		time.Sleep(skew)
		pb, o.b, o.errB = holepunch.PunchUDP(ctx, holepunch.Config{Conn: b.conn, Session: sess.Peer(), Remote: a.cands, OpeningTTL: ttlB})
	})
	wg.Wait()
	for _, p := range []*holepunch.Path{pa, pb} {
		if p != nil {
			_ = p.Close()
		}
	}
	return o
}

// predictFromProfile returns DefaultPredicted predicted candidates after
// srflx when the profile shows a sequential allocator behind an
// address-dependent mapping, as the probe's peer expands them, and nil
// otherwise (an endpoint-independent mapping needs no prediction).
func predictFromProfile(p *natclass.Profile, srflx netip.AddrPort) []holepunch.Candidate {
	if p == nil || p.PortAllocation == nil || p.PortAllocation.Pattern != natclass.Sequential || p.Mapping == natclass.EndpointIndependent {
		return nil
	}
	return holepunch.PredictPorts(srflx, max(p.PortAllocation.Step, 1), holepunch.DefaultPredicted)
}
