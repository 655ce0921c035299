//go:build linux

package testnet

// An IPv6-only site behind NAT64 (preset nat64): the host has a global
// IPv6 address and no IPv4 route; its router runs Debian's tayga (NAT64,
// RFC 6146, on a TUN device) with the network-specific prefix
// 2001:db8:64::/96 and unbound as the site's DNS64 resolver (RFC 6147),
// whose only data is ipv4only.arpa (RFC 7050), so a host learns the
// prefix the standard way. tayga's IPv4 side (the pool 192.168.255.0/24)
// leaves through the router's IPv4 program as a LAN would: the site's
// IPv4 preset is the NAT64's IPv4 behaviour.

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// NAT64 plan of a site router.
var (
	// NAT64Prefix (kernel_common.go) is the lab's network-specific prefix.
	nat64Pool = netip.MustParsePrefix("192.168.255.0/24")
)

const (
	nat64Dev = "nat64"
)

// checkNAT64Tools says what is missing to run a NAT64 site.
func checkNAT64Tools() error {
	for _, bin := range []string{"tayga", "unbound"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("the nat64 preset runs tayga and unbound (apt-get install tayga unbound): %w", err)
		}
	}
	return nil
}

// nat64Router starts tayga and unbound on a NAT64 site's router; dns is
// the router's LAN address the resolver listens on.
func (b *kernelBuilder) nat64Router(s SiteSpec, outer string, dns netip.Addr) error {
	dir, err := os.MkdirTemp("", "natlab-nat64-"+b.k.id+"-"+s.Name+"-")
	if err != nil {
		return fmt.Errorf("nat64 dir: %w", err)
	}
	b.k.mu.Lock()
	b.k.stops = append([]func() error{func() error { return os.RemoveAll(dir) }}, b.k.stops...) // removed last
	b.k.mu.Unlock()
	tayga := filepath.Join(dir, "tayga.conf")
	conf := fmt.Sprintf("tun-device %s\nipv4-addr %s\nprefix %s\ndynamic-pool %s\ndata-dir %s\n",
		nat64Dev, lanAddr(nat64Pool, 1), NAT64Prefix, nat64Pool, dir)
	if err := os.WriteFile(tayga, []byte(conf), 0o600); err != nil {
		return fmt.Errorf("tayga config: %w", err)
	}
	if out, err := exec.Command("ip", "netns", "exec", outer, "tayga", "--mktun", "-c", tayga).CombinedOutput(); err != nil {
		return fmt.Errorf("tayga --mktun in %s: %w: %s", outer, err, out)
	}
	h := b.handles[outer]
	l, err := h.LinkByName(nat64Dev)
	if err != nil {
		return fmt.Errorf("find %s in %s: %w", nat64Dev, outer, err)
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("up %s in %s: %w", nat64Dev, outer, err)
	}
	if err := b.route(outer, nat64Dev, nat64Pool, netip.Addr{}); err != nil {
		return err
	}
	if err := b.route(outer, nat64Dev, NAT64Prefix, netip.Addr{}); err != nil {
		return err
	}
	// tayga -d logs to stdout, block-buffered into a file: stdbuf makes
	// its start-up lines arrive as they are written.
	if err := b.startDaemon(outer, dir, []string{"Dynamic pool:"}, "stdbuf", "-oL", "tayga", "-c", tayga, "-d"); err != nil {
		return err
	}
	return b.startDNS64(outer, dir, dns)
}

// startDNS64 runs unbound as the site's DNS64 resolver: ipv4only.arpa
// is its one authoritative zone, served through the module chain (an
// auth-zone for upstream), so the dns64 module synthesises its AAAA.
func (b *kernelBuilder) startDNS64(ns, dir string, addr netip.Addr) error {
	zone := filepath.Join(dir, "ipv4only.arpa.zone")
	z := "$ORIGIN ipv4only.arpa.\n$TTL 300\n@ IN SOA ns.ipv4only.arpa. hostmaster.ipv4only.arpa. 1 3600 600 86400 300\n" +
		"@ IN NS ns.ipv4only.arpa.\n@ IN A 192.0.0.170\n@ IN A 192.0.0.171\n"
	conf := filepath.Join(dir, "unbound.conf")
	c := strings.Join([]string{
		"server:",
		"  interface: " + addr.String(),
		"  port: 53",
		"  do-daemonize: no",
		"  use-syslog: no",
		`  username: ""`,
		`  chroot: ""`,
		`  pidfile: ""`,
		"  directory: " + dir,
		`  module-config: "dns64 iterator"`,
		"  dns64-prefix: " + NAT64Prefix.String(),
		"  access-control: ::/0 allow",
		"  verbosity: 1",
		"auth-zone:",
		`  name: "ipv4only.arpa."`,
		"  zonefile: " + zone,
		"  for-upstream: yes",
		"  for-downstream: no",
		"  fallback-enabled: no",
		"",
	}, "\n")
	if err := errors.Join(os.WriteFile(zone, []byte(z), 0o600), os.WriteFile(conf, []byte(c), 0o600)); err != nil {
		return fmt.Errorf("unbound config: %w", err)
	}
	return b.startDaemon(ns, dir, []string{"start of service"}, "unbound", "-d", "-c", conf)
}
