package labcheck

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/testnet"
)

// TestServerUnreachableVsUDPBlockedKernel tells the two silences apart
// through real Linux NAT: behind a router that drops UDP but passes TCP,
// the server answers over TCP, so UDP is what is blocked; a port where no
// server runs answers ICMP port unreachable through the NAT and refuses
// TCP, so the server is unreachable and no NAT type is claimed.
func TestServerUnreachableVsUDPBlockedKernel(t *testing.T) {
	if testing.Short() {
		t.Skip("builds network namespaces")
	}
	p, lab := discoverIn(t, "udp-blocked", testnet.Kernel)
	if p.NATType != natclass.UDPBlocked {
		t.Errorf("udp-blocked site: NAT type %q, want %q (servers %+v)", p.NATType, natclass.UDPBlocked, p.Servers)
	}
	_, lab = discoverIn(t, "port-restricted-cone", testnet.Kernel)
	dead := netip.AddrPortFrom(testnet.ServerAddrs[0], 9).String()
	ctx, cancel := context.WithTimeout(context.Background(), labTimeout)
	defer cancel()
	_, err := natclass.Discover(ctx, natclass.Options{Net: lab.Site("a").Host.Net, Servers: []string{dead}})
	if !errors.Is(err, natclass.ErrServerUnreachable) || !strings.Contains(err.Error(), "port unreachable (ICMP)") {
		t.Errorf("dead server: %v, want ErrServerUnreachable from ICMP port unreachable", err)
	}
}
