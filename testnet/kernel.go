//go:build linux

package testnet

// The kernel backend. Every machine of the lab is a named network
// namespace natlab-<id>-<role> (bind-mounted under /run/netns like `ip netns
// add`), built with netlink and nftables from this process:
//
//	srv ── inet ── s-a ─ a-r (NAT) ── a-h         10.0.0.0/24
//	            └─ s-b ─ b-r (CGN) ── b-in (home) ── b-h
//	                             100.64.1.0/24    10.0.1.0/24
//
// inet is a plain router: the server's link (203.0.113.1 ↔ 203.0.113.10,
// .11) and each site's WAN link (198.51.100.1 ↔ 198.51.100.10+i) are
// point-to-point. Loss is an nftables rule in inet per link; delay turns a
// link from a veth pair into a TUN delay line (kernel_wire.go). Each router
// runs the nftables program of kernel_nft.go.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/natlab/natlab/natclass"
)

const (
	// nsPrefix marks every namespace the kernel lab creates, so `natlab
	// lab clean` and `ip netns list` can tell them apart.
	nsPrefix = "natlab-"
	// idBytes random bytes name a lab: 6 hex characters keep names short
	// while making a clash between concurrent labs unlikely.
	idBytes = 3
	// lockDir holds one lock file per running lab; a lab holds an flock on
	// it for its whole life, so Clean can tell a live lab from a crashed
	// one (the kernel drops the lock when the process dies).
	lockDir = "/run/natlab"
)

// Addressing plan of the kernel lab. The internet namespace is a router
// with a point-to-point link to the server and to each site's router.
var (
	// inetSiteGW is the internet router's address on every site link.
	inetSiteGW = netip.MustParseAddr("198.51.100.1")
	// inetServerGW is the internet router's address on the server link.
	inetServerGW = netip.MustParseAddr("203.0.113.1")
)

// Site i's outermost router has the WAN address sitePublic(i), shared
// with the in-process backend; so has the host of a site without NAT.

// kernelFirewallAddr is the WAN address of site i's router when it does
// not translate: the host behind it then holds sitePublic(i) itself.
func kernelFirewallAddr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 51, 100, byte(100 + i)})
}

// kernelSiteLAN is the private LAN of site i: .1 the router, .2 the host
// (the in-process backend's numbering).
func kernelSiteLAN(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(i), 0}), 24)
}

// kernelSiteCGN is the link between the home router and the carrier-grade NAT
// of site i, in the shared address space of RFC 6598.
func kernelSiteCGN(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64, byte(i), 0}), 24)
}

func lanAddr(p netip.Prefix, n byte) netip.Addr {
	a := p.Addr().As4()
	a[3] = n
	return netip.AddrFrom4(a)
}

// kernelStartHook, when set by a test, runs at each stage of startKernel
// and makes it fail there, to check the cleanup of a half-built lab.
var kernelStartHook func(id, stage string) error

// kernelLab owns everything one kernel lab created.
type kernelLab struct {
	id   string
	lock *os.File

	mu         sync.Mutex
	namespaces []string // in creation order
	wires      []*delayLine
	closed     bool
	// stops ends processes the lab runs in its namespaces (miniupnpd,
	// kernel_upnp.go), first thing at teardown.
	stops []func() error
}

func (k *kernelLab) ns(role string) string { return nsPrefix + k.id + "-" + role }

// teardown removes the lab: the delay lines, then the namespaces (which
// take their links and nftables with them), then the lock. Idempotent.
func (k *kernelLab) teardown() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil
	}
	k.closed = true
	var errs []error
	for _, stop := range slices.Backward(k.stops) {
		if err := stop(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, w := range k.wires {
		if err := w.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
			errs = append(errs, fmt.Errorf("close delay line: %w", err))
		}
	}
	for _, name := range slices.Backward(k.namespaces) {
		if err := deleteNamedNS(name); err != nil {
			errs = append(errs, fmt.Errorf("delete netns %s: %w", name, err))
		}
	}
	if k.lock != nil {
		removeLabFiles(k.id)
		os.Remove(k.lock.Name())
		k.lock.Close() // releases the flock
	}
	return errors.Join(errs...)
}

// kernelBuilder holds the per-namespace netlink handles while a lab is built.
type kernelBuilder struct {
	k       *kernelLab
	ctx     context.Context
	handles map[string]*netlink.Handle
	shared  bool       // Topology.Segment is Shared
	seg6    []seg6Port // the shared segment's IPv6 members so far (kernel_ipv6.go)
}

func (b *kernelBuilder) stage(name string) error {
	if err := b.ctx.Err(); err != nil {
		return fmt.Errorf("kernel lab %s: %s: %w", b.k.id, name, err)
	}
	if kernelStartHook != nil {
		return kernelStartHook(b.k.id, name)
	}
	return nil
}

// newNS creates the namespace for a role, brings up its loopback and sets
// its sysctls.
func (b *kernelBuilder) newNS(role string, router bool) (string, error) {
	name := b.k.ns(role)
	if err := newNamedNS(name); err != nil {
		return "", withPrivErr(err)
	}
	b.k.mu.Lock()
	b.k.namespaces = append(b.k.namespaces, name)
	b.k.mu.Unlock()
	h, err := netns.GetFromPath(filepath.Join(netnsDir, name))
	if err != nil {
		return "", fmt.Errorf("open netns %s: %w", name, err)
	}
	defer h.Close()
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		return "", fmt.Errorf("netlink in %s: %w", name, err)
	}
	b.handles[name] = nh
	lo, err := nh.LinkByName("lo")
	if err != nil {
		return "", fmt.Errorf("lo in %s: %w", name, err)
	}
	if err := nh.LinkSetUp(lo); err != nil {
		return "", fmt.Errorf("lo up in %s: %w", name, err)
	}
	sysctls := map[string]string{
		// Strict reverse-path filtering, inherited from the machine,
		// would drop asymmetric lab traffic (hairpins, two server IPs).
		"net/ipv4/conf/all/rp_filter":     "0",
		"net/ipv4/conf/default/rp_filter": "0",
		// IPv6 (dual-stack labs, kernel_ipv6.go): no duplicate address
		// detection on the links created next, so link-local addresses
		// (neighbour discovery's) are usable at once.
		"net/ipv6/conf/default/accept_dad": "0",
	}
	if router {
		sysctls["net/ipv4/ip_forward"] = "1"
	}
	return name, setSysctls(name, sysctls)
}

// setSysctls writes /proc/sys/net entries as seen from inside ns.
func setSysctls(ns string, kv map[string]string) error {
	_, err := inNS(ns, func() (struct{}, error) {
		for k, v := range kv {
			if err := os.WriteFile(filepath.Join("/proc/sys", k), []byte(v), 0); err != nil {
				return struct{}{}, fmt.Errorf("sysctl %s in %s: %w", k, ns, err)
			}
		}
		return struct{}{}, nil
	})
	return err
}

// link joins ifA in nsA and ifB in nsB: a veth pair created inside nsA with
// its peer created directly in nsB (nothing touches the root namespace),
// or, with a delay, two TUN devices and a delay line.
func (b *kernelBuilder) link(nsA, ifA, nsB, ifB string, delay time.Duration) error {
	if delay > 0 {
		w, err := newDelayLine(nsA, ifA, nsB, ifB, delay)
		if err != nil {
			return withPrivErr(err)
		}
		b.k.mu.Lock()
		b.k.wires = append(b.k.wires, w)
		b.k.mu.Unlock()
	} else {
		peer, err := netns.GetFromPath(filepath.Join(netnsDir, nsB))
		if err != nil {
			return fmt.Errorf("open netns %s: %w", nsB, err)
		}
		defer peer.Close()
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: ifA}, PeerName: ifB, PeerNamespace: netlink.NsFd(int(peer))}
		if err := b.handles[nsA].LinkAdd(veth); err != nil {
			return withPrivErr(fmt.Errorf("veth %s/%s – %s/%s: %w", nsA, ifA, nsB, ifB, err))
		}
	}
	for _, e := range []struct{ ns, ifc string }{{nsA, ifA}, {nsB, ifB}} {
		h := b.handles[e.ns]
		l, err := h.LinkByName(e.ifc)
		if err != nil {
			return fmt.Errorf("find %s in %s: %w", e.ifc, e.ns, err)
		}
		if err := h.LinkSetUp(l); err != nil {
			return fmt.Errorf("up %s in %s: %w", e.ifc, e.ns, err)
		}
	}
	return nil
}

// addr puts local (with its prefix) on ifc; a valid peer makes it a
// point-to-point address with a host route to the peer.
func (b *kernelBuilder) addr(ns, ifc string, local netip.Prefix, peer netip.Addr) error {
	h := b.handles[ns]
	l, err := h.LinkByName(ifc)
	if err != nil {
		return fmt.Errorf("find %s in %s: %w", ifc, ns, err)
	}
	a := &netlink.Addr{IPNet: toIPNet(local)}
	if peer.IsValid() {
		a.Peer = toIPNet(netip.PrefixFrom(peer, 32))
	}
	if err := h.AddrAdd(l, a); err != nil {
		return fmt.Errorf("address %s on %s in %s: %w", local, ifc, ns, err)
	}
	return nil
}

// route adds a route to dst (the default route if dst is invalid) via gw
// (or directly on the link if gw is invalid).
func (b *kernelBuilder) route(ns, ifc string, dst netip.Prefix, gw netip.Addr) error {
	h := b.handles[ns]
	l, err := h.LinkByName(ifc)
	if err != nil {
		return fmt.Errorf("find %s in %s: %w", ifc, ns, err)
	}
	r := &netlink.Route{LinkIndex: l.Attrs().Index}
	if dst.IsValid() {
		r.Dst = toIPNet(dst)
	}
	if gw.IsValid() {
		r.Gw = gw.AsSlice()
	} else {
		r.Scope = netlink.SCOPE_LINK
	}
	if err := h.RouteAdd(r); err != nil {
		return fmt.Errorf("route %v via %v on %s in %s: %w", dst, gw, ifc, ns, err)
	}
	return nil
}

func toIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func hostPrefix(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, 32) }

// router configures a NAT router's conntrack timeouts and nftables.
func (b *kernelBuilder) router(ns string, r routerSpec) error {
	if r.NAT.Mapping != "" {
		secs := func(d time.Duration) string { return strconv.Itoa(int(d / time.Second)) }
		if err := setSysctls(ns, map[string]string{
			"net/netfilter/nf_conntrack_udp_timeout":        secs(r.NAT.lifetime()),
			"net/netfilter/nf_conntrack_udp_timeout_stream": secs(r.NAT.establishedLifetime()),
		}); err != nil {
			return err
		}
	}
	c, err := nftConn(ns)
	if err != nil {
		return err
	}
	defer c.CloseLasting()
	if err := routerRules(c, r); err != nil {
		return withPrivErr(fmt.Errorf("router %s: %w", ns, err))
	}
	return nil
}

func nftConn(ns string) (*nftables.Conn, error) {
	h, err := netns.GetFromPath(filepath.Join(netnsDir, ns))
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", ns, err)
	}
	defer h.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(h)), nftables.AsLasting())
	if err != nil {
		return nil, fmt.Errorf("nftables in %s: %w", ns, err)
	}
	return c, nil
}

// withPrivErr marks permission errors with ErrNeedPrivileges.
func withPrivErr(err error) error {
	if err != nil && (errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES)) && !errors.Is(err, ErrNeedPrivileges) {
		return fmt.Errorf("%w: %w", ErrNeedPrivileges, err)
	}
	return err
}

func newLabID() (string, error) {
	b := make([]byte, idBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("lab id: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// takeLock creates and locks the lab's lock file.
func (k *kernelLab) takeLock() error {
	if err := os.MkdirAll(lockDir, 0o755); err != nil {
		return withPrivErr(fmt.Errorf("kernel lab lock dir: %w", err))
	}
	f, err := os.OpenFile(filepath.Join(lockDir, k.id+".lock"), os.O_CREATE|os.O_EXCL|os.O_RDWR|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return withPrivErr(fmt.Errorf("kernel lab lock: %w", err))
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		os.Remove(f.Name())
		return fmt.Errorf("kernel lab lock: %w", err)
	}
	k.lock = f
	return nil
}

func ipNetnsCommand(ns string) func(ctx context.Context, name string, args ...string) *exec.Cmd {
	return func(ctx context.Context, name string, args ...string) *exec.Cmd {
		return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
	}
}

func (b *kernelBuilder) host(name, ns string, addrs ...netip.Addr) (*Host, error) {
	n, err := newNSNet(ns)
	if err != nil {
		return nil, err
	}
	return &Host{Name: name, Net: n, Addrs: addrs, Namespace: ns, command: ipNetnsCommand(ns)}, nil
}

// startKernel builds the topology from network namespaces, veth (or
// delayedPacket TUN) links and nftables. Anything built is removed again if a
// step fails or ctx ends.
func startKernel(ctx context.Context, t Topology) (lab *Lab, err error) {
	if err := checkKernel(t); err != nil {
		return nil, err
	}
	id, err := newLabID()
	if err != nil {
		return nil, err
	}
	k := &kernelLab{id: id}
	if err := k.takeLock(); err != nil {
		return nil, err
	}
	b := &kernelBuilder{k: k, ctx: ctx, handles: map[string]*netlink.Handle{}, shared: t.shared()}
	defer func() {
		for _, h := range b.handles {
			h.Close()
		}
		if err != nil {
			if terr := k.teardown(); terr != nil {
				err = errors.Join(err, fmt.Errorf("cleanup: %w", terr))
			}
		}
	}()
	if err := b.stage("start"); err != nil {
		return nil, err
	}

	inet, err := b.newNS("inet", true)
	if err != nil {
		return nil, err
	}
	loss := map[string]float64{}

	srv, err := b.newNS("srv", false)
	if err != nil {
		return nil, err
	}
	loss["srv"] = t.ServerLink.Loss
	if t.shared() {
		err = b.sharedServer(inet, srv)
	} else {
		err = b.routedServer(inet, srv, t.ServerLink.Delay)
	}
	if err == nil && t.ipv6() {
		err = b.server6(inet, srv)
	}
	if err != nil {
		return nil, err
	}
	if err := b.stage("server"); err != nil {
		return nil, err
	}

	lab = &Lab{Backend: Kernel, Topology: t, ID: id}
	for i, s := range t.Sites {
		site, err := b.site(i, s, inet, t.shared())
		if err != nil {
			return nil, fmt.Errorf("site %q: %w", s.Name, err)
		}
		loss["s-"+s.Name] = s.WAN.Loss
		lab.Sites = append(lab.Sites, site)
		if err := b.stage("site " + s.Name); err != nil {
			return nil, err
		}
	}

	c, err := nftConn(inet)
	if err != nil {
		return nil, err
	}
	defer c.CloseLasting()
	family := nftables.TableFamilyIPv4
	if t.shared() {
		// Bridged frames pass the bridge family's hooks, not IPv4's.
		family = nftables.TableFamilyBridge
	}
	if err := lossRules(c, family, loss); err != nil {
		return nil, withPrivErr(err)
	}
	if err := b.stage("nftables"); err != nil {
		return nil, err
	}

	if lab.Server, err = b.host("server", srv, ServerAddrs[0], ServerAddrs[1]); err != nil {
		return nil, err
	}
	if t.ipv6() {
		lab.Server.Addrs6 = ServerAddrs6[:]
	}
	if err := b.stage("done"); err != nil {
		return nil, err
	}
	lab.close = k.teardown
	return lab, nil
}

// checkKernel rejects, before any namespace exists, what this backend
// cannot build.
func checkKernel(t Topology) error {
	for _, s := range t.Sites {
		if err := checkKernelNAT(s.NAT, 0); err != nil {
			return fmt.Errorf("site %q: %w", s.Name, err)
		}
	}
	for _, check := range []func(Topology) error{checkKernelPortMapping, checkShared, checkKernelIPv6} {
		if err := check(t); err != nil {
			return err
		}
	}
	if l := t.ServerLink; l.Loss < 0 || l.Loss >= 1 || l.Delay < 0 {
		return fmt.Errorf("server link: delay must be >= 0 and loss in [0,1)")
	}
	return nil
}

// site builds one site: outer router linked to the internet, an optional
// inner (home) router behind a carrier-grade NAT, and the host.
func (b *kernelBuilder) site(i int, s SiteSpec, inet string, shared bool) (*Site, error) {
	pub := sitePublic(i)
	inetIf := "s-" + s.Name
	outer, err := b.newNS(s.Name+"-r", true)
	if err != nil {
		return nil, err
	}
	wanIP := pub
	if s.NAT.Mapping == "" {
		wanIP = kernelFirewallAddr(i)
	}
	if shared {
		err = b.sharedWAN(inet, inetIf, outer, wanIP, s.NAT.Mapping == "")
	} else {
		err = b.routedWAN(inet, inetIf, outer, wanIP, s.WAN.Delay)
	}
	if err != nil {
		return nil, err
	}
	hostNS, err := b.newNS(s.Name+"-h", false)
	if err != nil {
		return nil, err
	}

	site := &Site{Spec: s, Public: pub}
	var hostIP netip.Addr
	var routerAddrs []netip.Addr
	if s.NAT.Mapping == "" {
		hostIP, routerAddrs, err = b.firewalledLAN(s, outer, hostNS, wanIP, pub, inet, inetIf, shared)
	} else {
		hostIP, routerAddrs, err = b.natLAN(i, s, outer, hostNS, wanIP, pub)
	}
	if err != nil {
		return nil, err
	}

	// Port mapping (kernel_upnp.go): miniupnpd on the router whose LAN
	// the host is on, when the NAT asks for it.
	if err := b.startPortMapping(i, s); err != nil {
		return nil, err
	}

	var host6 netip.Addr
	if s.IPv6 != nil {
		if host6, site.Public6, err = b.site6(i, s, inet, inetIf, outer, hostNS); err != nil {
			return nil, err
		}
		if s.IPv6.Translation == natclass.TranslationNAT64 {
			// The server sees the NAT64's IPv4 side: the site's address.
			site.Public6 = pub
			site.DNS64 = netip.AddrPortFrom(in6(siteGlobal6(i), iidRouter), 53)
			if err := b.nat64Router(s, outer, site.DNS64.Addr()); err != nil {
				return nil, err
			}
		}
	}
	var err2 error
	if site.Host, err2 = b.host(s.Name, hostNS, hostIP); err2 != nil {
		return nil, err2
	}
	if host6.IsValid() {
		site.Host.Addrs6 = []netip.Addr{host6}
	}
	if site.Router, err2 = b.host("router-"+s.Name, outer, routerAddrs...); err2 != nil {
		return nil, err2
	}
	return site, nil
}

// firewalledLAN is a site without translation: the host holds the
// site's public address, routed through the router, which may still
// filter.
func (b *kernelBuilder) firewalledLAN(s SiteSpec, outer, hostNS string, wanIP, pub netip.Addr, inet, inetIf string, shared bool) (netip.Addr, []netip.Addr, error) {
	hostIP := pub
	if err := b.link(outer, "lan", hostNS, "eth0", 0); err != nil {
		return hostIP, nil, err
	}
	if err := b.addr(outer, "lan", hostPrefix(wanIP), hostIP); err != nil {
		return hostIP, nil, err
	}
	if err := b.addr(hostNS, "eth0", hostPrefix(hostIP), wanIP); err != nil {
		return hostIP, nil, err
	}
	if err := b.route(hostNS, "eth0", netip.Prefix{}, wanIP); err != nil {
		return hostIP, nil, err
	}
	if !shared {
		if err := b.route(inet, inetIf, hostPrefix(hostIP), wanIP); err != nil {
			return hostIP, nil, err
		}
	}
	err := b.router(outer, routerSpec{NAT: s.NAT, WAN: "wan", LAN: "lan", Public: wanIP})
	return hostIP, []netip.Addr{wanIP}, err
}

// natLAN is a site behind the router's NAT, with an optional inner (home)
// router behind a carrier-grade NAT; the host's LAN hangs off the
// innermost router.
func (b *kernelBuilder) natLAN(i int, s SiteSpec, outer, hostNS string, wanIP, pub netip.Addr) (netip.Addr, []netip.Addr, error) {
	lan := kernelSiteLAN(i)
	if s.NAT.Carrier {
		lan = kernelSiteCGN(i) // the handset sits on the carrier's inside network
	}
	hostIP := lanAddr(lan, 2)
	natHost := outer // the router the host's LAN hangs off
	outerNAT := s.NAT
	outerNAT.Inner = nil
	routerAddrs := []netip.Addr{wanIP, lanAddr(lan, 1)}
	if s.NAT.Inner != nil {
		cgn := kernelSiteCGN(i)
		routerAddrs[1] = lanAddr(cgn, 1)
		home, err := b.homeRouter(s, outer, cgn)
		if err != nil {
			return hostIP, nil, err
		}
		natHost = home
	}
	if err := b.link(natHost, "lan", hostNS, "eth0", 0); err != nil {
		return hostIP, nil, err
	}
	if err := b.addr(natHost, "lan", netip.PrefixFrom(lanAddr(lan, 1), lan.Bits()), netip.Addr{}); err != nil {
		return hostIP, nil, err
	}
	if err := b.addr(hostNS, "eth0", netip.PrefixFrom(hostIP, lan.Bits()), netip.Addr{}); err != nil {
		return hostIP, nil, err
	}
	// An IPv6-only site (NAT64) has IPv4 on its LAN only; its router's
	// IPv4 program serves tayga's pool instead of the LAN.
	lanIf := "lan"
	if s.IPv6 != nil && s.IPv6.Translation == natclass.TranslationNAT64 {
		lanIf = nat64Dev
	} else if err := b.route(hostNS, "eth0", netip.Prefix{}, lanAddr(lan, 1)); err != nil {
		return hostIP, nil, err
	}
	err := b.router(outer, routerSpec{NAT: outerNAT, WAN: "wan", LAN: lanIf, Public: pub})
	return hostIP, routerAddrs, err
}

// homeRouter is the inner router of a double NAT, on the carrier's
// inside network cgn behind outer.
func (b *kernelBuilder) homeRouter(s SiteSpec, outer string, cgn netip.Prefix) (string, error) {
	home, err := b.newNS(s.Name+"-in", true)
	if err != nil {
		return "", err
	}
	if err := b.link(outer, "lan", home, "wan", 0); err != nil {
		return "", err
	}
	if err := b.addr(outer, "lan", netip.PrefixFrom(lanAddr(cgn, 1), cgn.Bits()), netip.Addr{}); err != nil {
		return "", err
	}
	if err := b.addr(home, "wan", netip.PrefixFrom(lanAddr(cgn, 2), cgn.Bits()), netip.Addr{}); err != nil {
		return "", err
	}
	if err := b.route(home, "wan", netip.Prefix{}, lanAddr(cgn, 1)); err != nil {
		return "", err
	}
	if err := b.router(home, routerSpec{NAT: *s.NAT.Inner, WAN: "wan", LAN: "lan", Public: lanAddr(cgn, 2)}); err != nil {
		return "", err
	}
	return home, nil
}

// Clean removes network namespaces left behind by kernel labs whose
// process died without tearing them down (kill -9, a crash). Namespaces of
// labs still running, in this process or another, are kept.
func Clean(ctx context.Context) (removed []string, err error) { return clean(ctx, "") }

// CleanLab is Clean for the one lab id (when no process holds it).
func CleanLab(ctx context.Context, id string) (removed []string, err error) {
	if err := CheckID(id); err != nil {
		return nil, err
	}
	return clean(ctx, id)
}

// clean removes the namespaces of dead labs: every one, or only id.
func clean(ctx context.Context, only string) (removed []string, err error) {
	entries, err := os.ReadDir(netnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, withPrivErr(fmt.Errorf("list %s: %w", netnsDir, err))
	}
	byID := map[string][]string{}
	for _, e := range entries {
		name := e.Name()
		if rest, ok := strings.CutPrefix(name, nsPrefix); ok {
			id, _, _ := strings.Cut(rest, "-")
			byID[id] = append(byID[id], name)
		}
	}
	// Lock files of crashed labs that got no namespace yet.
	locks, _ := os.ReadDir(lockDir)
	for _, e := range locks {
		if id, ok := strings.CutSuffix(e.Name(), ".lock"); ok {
			if _, seen := byID[id]; !seen {
				byID[id] = nil
			}
		}
	}
	ids := make([]string, 0, len(byID))
	for id := range byID {
		if only == "" || id == only {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	var errs []error
	for _, id := range ids {
		if err := ctx.Err(); err != nil {
			return removed, errors.Join(append(errs, fmt.Errorf("clean: %w", err))...)
		}
		unlock, live := labLive(id)
		if live {
			continue
		}
		for _, name := range byID[id] {
			if err := deleteNamedNS(name); err != nil {
				errs = append(errs, withPrivErr(fmt.Errorf("delete netns %s: %w", name, err)))
				continue
			}
			removed = append(removed, name)
		}
		unlock()
	}
	return removed, errors.Join(errs...)
}

// labLive reports whether a running process holds lab id's lock. If not,
// it holds the lock itself until unlock, which also removes the file.
func labLive(id string) (unlock func(), live bool) {
	path := filepath.Join(lockDir, id+".lock")
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return func() {}, false // no lock file: nobody owns these
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, true
	}
	return func() {
		removeLabFiles(id)
		os.Remove(path)
		f.Close()
	}, false
}
