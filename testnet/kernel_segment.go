//go:build linux

package testnet

// The two ways the kernel lab joins site routers and the server
// (Topology.Segment). Routed:
//
//	srv ── inet (router) ── a-r, b-r      point-to-point links, one hop apart
//
// Shared: the inet namespace holds a bridge "sw" (a switch) and every link
// is a port of it; the server and the routers' WANs are on one Ethernet
// segment, 198.51.100.0/24 and 203.0.113.0/24 both on-link, so a router
// reaches the other routers and the server directly, with no router (and
// no TTL decrement) between.

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/vishvananda/netlink"
)

// sharedBridge is the name of the switch in the inet namespace.
const sharedBridge = "sw"

// sharedPrefix is the on-link prefix of every address on the shared
// segment: a /24 of the documentation ranges.
const sharedPrefix = 24

// anyDst is the default route's destination, spelled out: an on-link
// default route has no gateway to name it by.
var anyDst = netip.MustParsePrefix("0.0.0.0/0")

// routedServer links the server to the inet router: two public addresses
// on one point-to-point link.
func (b *kernelBuilder) routedServer(inet, srv string, delay time.Duration) error {
	if err := b.link(inet, "srv", srv, "eth0", delay); err != nil {
		return err
	}
	if err := b.addr(srv, "eth0", hostPrefix(ServerAddrs[0]), inetServerGW); err != nil {
		return err
	}
	if err := b.addr(srv, "eth0", hostPrefix(ServerAddrs[1]), netip.Addr{}); err != nil {
		return err
	}
	if err := b.route(srv, "eth0", netip.Prefix{}, inetServerGW); err != nil {
		return err
	}
	if err := b.addr(inet, "srv", hostPrefix(inetServerGW), ServerAddrs[0]); err != nil {
		return err
	}
	return b.route(inet, "srv", hostPrefix(ServerAddrs[1]), netip.Addr{})
}

// routedWAN links a site's outer router to the inet router.
func (b *kernelBuilder) routedWAN(inet, inetIf, outer string, wanIP netip.Addr, delay time.Duration) error {
	if err := b.link(inet, inetIf, outer, "wan", delay); err != nil {
		return err
	}
	if err := b.addr(inet, inetIf, hostPrefix(inetSiteGW), wanIP); err != nil {
		return err
	}
	if err := b.addr(outer, "wan", hostPrefix(wanIP), inetSiteGW); err != nil {
		return err
	}
	return b.route(outer, "wan", netip.Prefix{}, inetSiteGW)
}

// sharedServer creates the switch and plugs the server into it.
func (b *kernelBuilder) sharedServer(inet, srv string) error {
	h := b.handles[inet]
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: sharedBridge}}
	if err := h.LinkAdd(br); err != nil {
		return withPrivErr(fmt.Errorf("bridge in %s: %w", inet, err))
	}
	if err := h.LinkSetUp(br); err != nil {
		return fmt.Errorf("bridge up in %s: %w", inet, err)
	}
	// The switch is not a router: bridged frames must not meet the
	// namespace's IPv4 hooks (br_netfilter), whatever the machine set.
	if err := setSysctls(inet, map[string]string{"net/bridge/bridge-nf-call-iptables": "0"}); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := b.port(inet, "srv", srv, "eth0"); err != nil {
		return err
	}
	for _, a := range ServerAddrs {
		if err := b.addr(srv, "eth0", netip.PrefixFrom(a, sharedPrefix), netip.Addr{}); err != nil {
			return err
		}
	}
	return b.route(srv, "eth0", anyDst, netip.Addr{})
}

// sharedWAN plugs a site's outer router into the switch. A router that
// does not translate answers ARP for its host's public address (proxy
// ARP), as a transparent firewall in front of a public host does.
func (b *kernelBuilder) sharedWAN(inet, inetIf, outer string, wanIP netip.Addr, firewall bool) error {
	if err := b.port(inet, inetIf, outer, "wan"); err != nil {
		return err
	}
	if err := b.addr(outer, "wan", netip.PrefixFrom(wanIP, sharedPrefix), netip.Addr{}); err != nil {
		return err
	}
	if err := b.route(outer, "wan", anyDst, netip.Addr{}); err != nil {
		return err
	}
	if firewall {
		return setSysctls(outer, map[string]string{"net/ipv4/conf/wan/proxy_arp": "1"})
	}
	return nil
}

// port links ifc in ns to a new port portIf of the switch.
func (b *kernelBuilder) port(inet, portIf, ns, ifc string) error {
	if err := b.link(inet, portIf, ns, ifc, 0); err != nil {
		return err
	}
	h := b.handles[inet]
	br, err := h.LinkByName(sharedBridge)
	if err != nil {
		return fmt.Errorf("find %s in %s: %w", sharedBridge, inet, err)
	}
	l, err := h.LinkByName(portIf)
	if err != nil {
		return fmt.Errorf("find %s in %s: %w", portIf, inet, err)
	}
	if err := h.LinkSetMaster(l, br); err != nil {
		return fmt.Errorf("plug %s into %s in %s: %w", portIf, sharedBridge, inet, err)
	}
	return nil
}

// checkShared rejects what the shared segment cannot shape: the delay
// lines are point-to-point TUN links, which a bridge cannot carry.
func checkShared(t Topology) error {
	if !t.shared() {
		return nil
	}
	if t.ServerLink.Delay > 0 {
		return fmt.Errorf("server link delay on the %s topology: %w", Shared, ErrNotSupported)
	}
	for _, s := range t.Sites {
		if s.WAN.Delay > 0 {
			return fmt.Errorf("site %q: link delay on the %s topology: %w", s.Name, Shared, ErrNotSupported)
		}
	}
	return nil
}
