//go:build linux

package testnet

// Port mapping in the kernel lab: a NAT whose spec asks for it runs
// miniupnpd (UPnP-IGD, NAT-PMP and PCP) in the router namespace that holds
// the host's LAN. Debian 12 builds miniupnpd 2.3.1 with the nftables
// backend; two things make it work next to the lab's own `ip natlab` table:
//
//   - miniupnpd only adds rules to chains that already exist, so the lab
//     creates its table `inet miniupnpd` first, with base chains that
//     accept by default and jump to miniupnpd's chains. The lab's forward
//     filter already admits DNAT-ed flows (`ct status dnat`), so a
//     redirect miniupnpd adds is all an inbound packet needs.
//   - miniupnpd refuses to forward ports when its WAN address is a
//     reserved one, and the lab's public addresses come from the
//     documentation ranges, which it counts as reserved. With
//     ext_perform_stun it takes its external address from a STUN server
//     instead; the lab answers that STUN itself, on the router's own WAN
//     address, with the address unchanged.

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

const (
	// UPnPHTTPPort is where miniupnpd serves its description and SOAP
	// control in the lab; fixed so a person can curl it.
	UPnPHTTPPort = 5000
	// upnpTable is miniupnpd's nftables table (family inet); its chain
	// names are miniupnpd's defaults.
	upnpTable = "miniupnpd"
)

// upnpReadyLines are what miniupnpd logs once each service listens and
// its rules are in place.
var upnpReadyLines = []string{"HTTP listening on port", "Listening for NAT-PMP/PCP traffic", "Port forwarding is now enabled"}

// miniupnpdPath finds the binary.
func miniupnpdPath() (string, error) {
	if _, err := os.Stat(MiniUPnPd); err == nil {
		return MiniUPnPd, nil
	}
	p, err := exec.LookPath("miniupnpd")
	if err != nil {
		return "", ErrNoMiniUPnPd
	}
	return p, nil
}

// portMappingRouter says which router of site i runs miniupnpd: the one
// whose LAN the host is on, if its NAT asks for port mapping.
func portMappingRouter(i int, s SiteSpec) (role string, ext netip.Addr, lan netip.Prefix, ok bool) {
	switch {
	case s.NAT.Inner != nil && s.NAT.Inner.PortMapping:
		return s.Name + "-in", lanAddr(kernelSiteCGN(i), 2), kernelSiteLAN(i), true
	case s.NAT.Inner == nil && s.NAT.PortMapping:
		return s.Name + "-r", sitePublic(i), kernelSiteLAN(i), true
	}
	return "", netip.Addr{}, netip.Prefix{}, false
}

// checkKernelPortMapping rejects port mapping where the kernel lab cannot
// run it, before any namespace exists.
func checkKernelPortMapping(t Topology) error {
	need := false
	for _, s := range t.Sites {
		if s.NAT.PortMapping && (s.NAT.Mapping == "" || s.NAT.Inner != nil) {
			return fmt.Errorf("site %q: port mapping on a router without NAT or on a carrier-grade NAT: %w", s.Name, ErrNotSupported)
		}
		if in := s.NAT.Inner; in != nil && in.PortMapping && in.Mapping == "" {
			return fmt.Errorf("site %q: port mapping on a router without NAT: %w", s.Name, ErrNotSupported)
		}
		_, _, _, ok := portMappingRouter(0, s)
		need = need || ok
	}
	if need {
		if _, err := miniupnpdPath(); err != nil {
			return err
		}
	}
	return nil
}

// upnpDaemon is what one miniupnpd needs besides its process (a
// labDaemon): its directory and the STUN responder on the router's WAN.
type upnpDaemon struct {
	dir  string
	stun net.PacketConn
	srvd chan struct{} // closed when the STUN responder has returned
}

// startPortMapping runs miniupnpd on the router of site i that needs it,
// if any. The daemon is registered for teardown before it starts, so a
// failure at any later point still stops it.
func (b *kernelBuilder) startPortMapping(i int, s SiteSpec) error {
	role, ext, lan, ok := portMappingRouter(i, s)
	if !ok {
		return nil
	}
	bin, err := miniupnpdPath()
	if err != nil {
		return err
	}
	ns := b.k.ns(role)
	d := &upnpDaemon{}
	b.k.mu.Lock()
	b.k.stops = append(b.k.stops, d.stop)
	b.k.mu.Unlock()
	if d.dir, err = os.MkdirTemp("", "natlab-upnp-"+b.k.id+"-"+s.Name+"-"); err != nil {
		return fmt.Errorf("miniupnpd dir: %w", err)
	}
	if err := upnpChains(ns); err != nil {
		return err
	}
	n, err := newNSNet(ns)
	if err != nil {
		return err
	}
	if d.stun, err = n.ListenPacket("udp4", netip.AddrPortFrom(ext, 0).String()); err != nil {
		return fmt.Errorf("miniupnpd STUN responder in %s: %w", ns, err)
	}
	d.srvd = make(chan struct{})
	go func() {
		defer close(d.srvd)
		serveSelfSTUN(d.stun)
	}()
	stunPort := d.stun.LocalAddr().(*net.UDPAddr).Port
	uuid := make([]byte, 16)
	if _, err := rand.Read(uuid); err != nil {
		return fmt.Errorf("miniupnpd uuid: %w", err)
	}
	h := hex.EncodeToString(uuid)
	conf := strings.Join([]string{
		"ext_ifname=wan",
		"listening_ip=lan",
		fmt.Sprintf("http_port=%d", UPnPHTTPPort),
		"enable_upnp=yes",
		"enable_natpmp=yes", // NAT-PMP and PCP
		"secure_mode=yes",   // clients map only to themselves, like real CPE
		"system_uptime=no",
		"min_lifetime=120", // PCP's suggested bounds (RFC 6887 §15)
		"max_lifetime=86400",
		"lease_file=" + filepath.Join(d.dir, "leases"),
		"minissdpdsocket=" + filepath.Join(d.dir, "minissdpd.sock"),
		fmt.Sprintf("uuid=%s-%s-%s-%s-%s", h[0:8], h[8:12], h[12:16], h[16:20], h[20:32]),
		"ext_perform_stun=yes",
		"ext_stun_host=" + ext.String(),
		fmt.Sprintf("ext_stun_port=%d", stunPort),
		"upnp_table_name=" + upnpTable,
		"upnp_nat_table_name=" + upnpTable,
		fmt.Sprintf("allow 1024-65535 %s 1024-65535", lan),
		"deny 0-65535 0.0.0.0/0 0-65535",
		"",
	}, "\n")
	confPath := filepath.Join(d.dir, "miniupnpd.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return fmt.Errorf("miniupnpd config: %w", err)
	}
	// -d keeps it in the foreground (and logging to stderr), so this
	// process owns it; the pid file goes to the lab's directory.
	return b.startDaemon(ns, d.dir, upnpReadyLines, bin, "-d", "-f", confPath, "-P", filepath.Join(d.dir, "miniupnpd.pid"))
}

// stop ends the STUN responder and removes the files; miniupnpd itself,
// registered later, has stopped by then (stops run last first).
func (d *upnpDaemon) stop() error {
	var errs []error
	if d.stun != nil {
		_ = d.stun.Close()
		<-d.srvd
	}
	if d.dir != "" {
		if err := os.RemoveAll(d.dir); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", d.dir, err))
		}
	}
	return errors.Join(errs...)
}

// upnpChains creates miniupnpd's table and chains in ns (what Debian's
// /etc/miniupnpd/nft_init.sh does), with accepting base chains so that
// the lab's own table alone decides what is filtered.
func upnpChains(ns string) error {
	c, err := nftConn(ns)
	if err != nil {
		return err
	}
	defer c.CloseLasting()
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: upnpTable})
	accept := nftables.ChainPolicyAccept
	for _, ch := range []struct {
		base, target string
		typ          nftables.ChainType
		hook         *nftables.ChainHook
		prio         *nftables.ChainPriority
	}{
		{"forward", "miniupnpd", nftables.ChainTypeFilter, nftables.ChainHookForward, nftables.ChainPriorityFilter},
		{"prerouting", "prerouting_miniupnpd", nftables.ChainTypeNAT, nftables.ChainHookPrerouting, nftables.ChainPriorityNATDest},
		{"postrouting", "postrouting_miniupnpd", nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource},
	} {
		base := c.AddChain(&nftables.Chain{Name: ch.base, Table: t, Type: ch.typ, Hooknum: ch.hook, Priority: ch.prio, Policy: &accept})
		c.AddChain(&nftables.Chain{Name: ch.target, Table: t})
		c.AddRule(&nftables.Rule{Table: t, Chain: base, Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: ch.target}}})
	}
	if err := c.Flush(); err != nil {
		return withPrivErr(fmt.Errorf("miniupnpd nftables in %s: %w", ns, err))
	}
	return nil
}

// serveSelfSTUN answers STUN Binding requests with the address they came
// from, ignoring CHANGE-REQUEST: to miniupnpd, which asks from the router
// itself, that reads as "a public address without a NAT or filter". It
// returns when conn is closed.
func serveSelfSTUN(conn net.PacketConn) {
	const (
		headerSize   = 20
		magicCookie  = 0x2112A442
		xorMapped    = 0x0020
		bindingReq   = 0x0001
		bindingResp  = 0x0101
		familyIPv4   = 0x01
		attrSize     = 12 // XOR-MAPPED-ADDRESS for IPv4, with its header
		maxDatagram  = 1500
		cookieOffset = 4
	)
	buf := make([]byte, maxDatagram)
	for {
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			return
		}
		ua, ok := from.(*net.UDPAddr)
		if !ok || n < headerSize || binary.BigEndian.Uint16(buf[0:2]) != bindingReq ||
			binary.BigEndian.Uint32(buf[cookieOffset:8]) != magicCookie {
			continue
		}
		ap := ua.AddrPort()
		ip := ap.Addr().Unmap().As4()
		resp := make([]byte, headerSize+attrSize)
		binary.BigEndian.PutUint16(resp[0:], bindingResp)
		binary.BigEndian.PutUint16(resp[2:], attrSize)
		copy(resp[4:20], buf[4:20]) // cookie and transaction ID
		a := resp[headerSize:]
		binary.BigEndian.PutUint16(a[0:], xorMapped)
		binary.BigEndian.PutUint16(a[2:], 8)
		a[5] = familyIPv4
		binary.BigEndian.PutUint16(a[6:], ap.Port()^(magicCookie>>16))
		binary.BigEndian.PutUint32(a[8:], binary.BigEndian.Uint32(ip[:])^magicCookie)
		_, _ = conn.WriteTo(resp, from)
	}
}
