package natclass_test

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/transport/v4"

	"github.com/natlab/natlab/internal/vnetlab"
	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/server"
)

// lateNet is a server's Net on a machine that became loaded after test I:
// the server's first answer leaves at once (test I measures a short RTT),
// every later one leaves delay late. The datagrams are real; only their
// departure is held back, as a starved process would hold it.
type lateNet struct {
	transport.Net
	delay time.Duration
	sent  atomic.Int64
	wg    sync.WaitGroup
}

func (n *lateNet) ListenPacket(network, address string) (net.PacketConn, error) {
	c, err := n.Net.ListenPacket(network, address)
	if err != nil {
		return nil, err
	}
	return &lateConn{PacketConn: c, n: n}, nil
}

type lateConn struct {
	net.PacketConn
	n *lateNet
}

func (c *lateConn) WriteTo(b []byte, to net.Addr) (int, error) {
	if c.n.sent.Add(1) == 1 {
		return c.PacketConn.WriteTo(b, to)
	}
	b = append([]byte(nil), b...)
	c.n.wg.Add(1)
	time.AfterFunc(c.n.delay, func() {
		defer c.n.wg.Done()
		_, _ = c.PacketConn.WriteTo(b, to) // the socket may be closed by then
	})
	return len(b), nil
}

// TestDiscoverLateAnswers: answers that come later than test I's RTT
// predicts are still answers. A positive test (mapping II/III, filtering
// I, port allocation) retransmits and waits its budget out; a negative
// one (filtering II/III, hairpinning) turns silence into a result only
// once the tests that must be answered have been, so a late "yes" is not
// read as "filtered". Before, the plan gave up after three 50 ms waits:
// mapping and filtering came back undetermined, or filtering wrong.
func TestDiscoverLateAnswers(t *testing.T) {
	bs := []natclass.Behavior{natclass.EndpointIndependent, natclass.AddressAndPortDependent}
	for _, m := range bs {
		for _, f := range bs {
			t.Run(string(m)+"/"+string(f), func(t *testing.T) {
				t.Parallel()
				lab, err := vnetlab.Start(vnetlab.Config{Mapping: m, Filtering: f})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = lab.Close() })
				ln := &lateNet{Net: lab.Server, delay: 300 * time.Millisecond}
				addrs := server.Addrs{Primary: netip.AddrPortFrom(vnetlab.ServerIP1, 3478), AltIP: vnetlab.ServerIP2, AltPort: 3479}
				srv, err := server.Listen(ln, server.Config{Addrs: addrs})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = srv.Close(); ln.wg.Wait() })
				p, err := natclass.Discover(context.Background(), natclass.Options{Net: lab.Client, Servers: []string{addrs.Primary.String()}, NoTCP: true})
				if err != nil {
					t.Fatal(err)
				}
				if p.Mapping != m || p.Filtering != f {
					t.Errorf("mapping %q filtering %q, want %q %q (not run: %+v)", p.Mapping, p.Filtering, m, f, p.NotRun)
				}
				if p.PortAllocation == nil {
					t.Errorf("no port allocation (not run: %+v)", p.NotRun)
				}
				if want := natclass.TriOf(f == natclass.EndpointIndependent); p.Hairpinning != want {
					t.Errorf("hairpinning %v, want %v", p.Hairpinning, want)
				}
			})
		}
	}
}
