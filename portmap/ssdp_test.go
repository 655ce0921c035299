package portmap_test

import (
	"context"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/pion/transport/v4"
	"github.com/pion/transport/v4/stdnet"

	"github.com/natlab/natlab/portmap"
)

// noRouteNet is a host without an IPv4 route (an IPv6-only host): its
// unconnected sockets cannot send, as the SSDP multicast search's
// cannot there, while a connected socket to the gateway still gets its
// refusal.
type noRouteNet struct{ transport.Net }

func (n noRouteNet) ListenPacket(network, address string) (net.PacketConn, error) {
	c, err := n.Net.ListenPacket(network, address)
	if err != nil {
		return nil, err
	}
	return unroutable{c}, nil
}

type unroutable struct{ net.PacketConn }

func (unroutable) WriteTo([]byte, net.Addr) (int, error) { return 0, syscall.ENETUNREACH }

// TestProbeSSDPOneSearchFailsFirst: the multicast search fails at once
// and the unicast one then gets the gateway's port unreachable; the
// probe must end with that answer, not wait for a third result (it hung
// on the IPv6-only host of the NAT64 lab).
func TestProbeSSDPOneSearchFailsFirst(t *testing.T) {
	n, err := stdnet.NewNet()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan portmap.Report, 1)
	go func() {
		done <- portmap.Probe(context.Background(), portmap.Options{Net: noRouteNet{n}, Gateway: netip.MustParseAddr("127.0.0.1"), Timeout: time.Second})
	}()
	select {
	case r := <-done:
		if r.Any() {
			t.Skipf("something on this host answers port mapping on loopback: %+v", r)
		}
		for _, p := range r.Protocols {
			if p.Error == "" {
				t.Errorf("%s: unavailable without a reason", p.Protocol)
			}
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Probe did not return: the SSDP search waits for a result that never comes")
	}
}
