package testnet

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"sync"

	"github.com/pion/transport/v4"
)

// Ephemeral ports come from Linux's default ip_local_port_range and are
// drawn at random, as Linux does, so that a preserving NAT cannot be
// mistaken for a sequential one.
const (
	ephemeralMin = 32768
	ephemeralMax = 60999
)

// ethMTU is the MTU reported for eth0; the lab does not fragment or
// enforce it, but ICE and TURN code read it.
const ethMTU = 1500

var loopback = netip.MustParseAddr("127.0.0.1")

// errTCP is returned by every TCP entry point of the in-process Net.
var errTCP = fmt.Errorf("TCP needs the kernel backend: %w", ErrNotSupported)

// vhost is one in-process machine: its addresses, sockets and the first
// hop packets take when leaving it. It implements transport.Net.
type vhost struct {
	name  string
	addrs []netip.Addr
	// egress takes packets that leave the host (to its NAT, firewall or
	// link); set once while the lab is built.
	egress func(packet)

	mu     sync.Mutex
	rng    *rand.Rand
	bound  map[netip.AddrPort]*vconn
	closed bool
}

var _ transport.Net = (*vhost)(nil)

func newVHost(name string, addrs []netip.Addr, seed uint64) *vhost {
	return &vhost{
		name:  name,
		addrs: addrs,
		rng:   rand.New(rand.NewPCG(seed, seed^0x2545f4914f6cdd1d)),
		bound: map[netip.AddrPort]*vconn{},
	}
}

func (h *vhost) ownsAddr(a netip.Addr) bool {
	if a.IsLoopback() {
		return true
	}
	for _, x := range h.addrs {
		if x == a {
			return true
		}
	}
	return false
}

// sourceFor picks the source of a datagram from a socket bound to local:
// a wildcard socket sends from the primary address, or loopback to itself.
func (h *vhost) sourceFor(local, dst netip.AddrPort) netip.AddrPort {
	if local.Addr().IsUnspecified() {
		if dst.Addr().IsLoopback() {
			return netip.AddrPortFrom(loopback, local.Port())
		}
		return netip.AddrPortFrom(h.addrs[0], local.Port())
	}
	return local
}

// destination turns a caller's address into a lab endpoint; an unspecified
// address means this host, as with the kernel.
func (h *vhost) destination(a *net.UDPAddr) (netip.AddrPort, error) {
	ap := a.AddrPort()
	ip := ap.Addr().Unmap()
	if !ip.IsValid() || ip.IsUnspecified() {
		ip = h.addrs[0]
	}
	if !ip.Is4() {
		return netip.AddrPort{}, fmt.Errorf("%s: IPv6 in the in-process lab: %w", ip, ErrNotSupported)
	}
	return netip.AddrPortFrom(ip, ap.Port()), nil
}

// output sends a datagram: to a local socket when it is for this host,
// otherwise out through the first hop.
func (h *vhost) output(p packet) {
	if h.ownsAddr(p.dst.Addr()) {
		h.deliver(p)
		return
	}
	h.egress(p)
}

// deliver hands an arriving datagram to the socket bound to its
// destination, preferring an exact binding over a wildcard one.
func (h *vhost) deliver(p packet) {
	if !h.ownsAddr(p.dst.Addr()) {
		return
	}
	h.mu.Lock()
	c := h.bound[p.dst]
	if c == nil {
		c = h.bound[netip.AddrPortFrom(netip.IPv4Unspecified(), p.dst.Port())]
	}
	h.mu.Unlock()
	if c != nil {
		c.push(p)
	}
}

// portTakenLocked reports whether binding a:port would clash with an
// existing socket: same address, or either side a wildcard.
func (h *vhost) portTakenLocked(a netip.Addr, port uint16) bool {
	if _, ok := h.bound[netip.AddrPortFrom(a, port)]; ok {
		return true
	}
	if _, ok := h.bound[netip.AddrPortFrom(netip.IPv4Unspecified(), port)]; ok {
		return true
	}
	if a.IsUnspecified() {
		for k := range h.bound {
			if k.Port() == port {
				return true
			}
		}
	}
	return false
}

// bind creates a socket on local (port 0: an ephemeral port). A wildcard
// address on a single-address host becomes that address, so LocalAddr
// shows something a peer can reach, as pion's vnet does.
func (h *vhost) bind(local, remote netip.AddrPort) (*vconn, error) {
	a := local.Addr()
	if !a.IsValid() {
		a = netip.IPv4Unspecified()
	}
	switch {
	case a.IsUnspecified() && len(h.addrs) == 1:
		a = h.addrs[0]
	case !a.IsUnspecified() && !h.ownsAddr(a):
		return nil, fmt.Errorf("%s on host %s: %w", a, h.name, errAddrNotAvail)
	}
	if a.IsLoopback() {
		a = loopback
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, net.ErrClosed
	}
	port := local.Port()
	if port == 0 {
		var ok bool
		if port, ok = h.ephemeralLocked(a); !ok {
			return nil, fmt.Errorf("no free ephemeral port on host %s: %w", h.name, errAddrInUse)
		}
	} else if h.portTakenLocked(a, port) {
		return nil, fmt.Errorf("%s:%d on host %s: %w", a, port, h.name, errAddrInUse)
	}
	c := &vconn{host: h, local: netip.AddrPortFrom(a, port), remote: remote, limit: defaultRecvBuffer}
	h.bound[c.local] = c
	return c, nil
}

func (h *vhost) ephemeralLocked(a netip.Addr) (uint16, bool) {
	const span = ephemeralMax - ephemeralMin + 1
	start := h.rng.IntN(span)
	for i := range span {
		p := uint16(ephemeralMin + (start+i)%span)
		if !h.portTakenLocked(a, p) {
			return p, true
		}
	}
	return 0, false
}

func (h *vhost) unbind(c *vconn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.bound[c.local] == c {
		delete(h.bound, c.local)
	}
}

// close shuts every socket of the host and refuses new ones.
func (h *vhost) close() {
	h.mu.Lock()
	h.closed = true
	conns := make([]*vconn, 0, len(h.bound))
	for _, c := range h.bound {
		conns = append(conns, c)
	}
	h.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

func checkUDPNetwork(network string) error {
	switch network {
	case "udp", "udp4":
		return nil
	case "udp6":
		return fmt.Errorf("network %q: IPv6 in the in-process lab: %w", network, ErrNotSupported)
	case "tcp", "tcp4", "tcp6":
		return fmt.Errorf("network %q: %w", network, errTCP)
	}
	return fmt.Errorf("network %q: %w", network, net.UnknownNetworkError(network))
}

// parseAddr parses "host:port" with an IP literal (or empty) host.
func parseAddr(address string) (netip.AddrPort, error) {
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("address %q: %w", address, err)
	}
	port := 0
	if portStr != "" {
		if port, err = strconv.Atoi(portStr); err != nil || port < 0 || port > 65535 {
			return netip.AddrPort{}, fmt.Errorf("address %q: bad port: %w", address, net.InvalidAddrError(portStr))
		}
	}
	ip, err := parseIP(host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("address %q: %w", address, err)
	}
	return netip.AddrPortFrom(ip, uint16(port)), nil
}

func parseIP(host string) (netip.Addr, error) {
	switch host {
	case "":
		return netip.IPv4Unspecified(), nil
	case "localhost":
		return loopback, nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%q: %w", host, errNoDNS)
	}
	ip = ip.Unmap()
	if !ip.Is4() {
		return netip.Addr{}, fmt.Errorf("%s: IPv6 in the in-process lab: %w", ip, ErrNotSupported)
	}
	return ip, nil
}

func fromUDPAddr(a *net.UDPAddr) (netip.AddrPort, error) {
	if a == nil {
		return netip.AddrPortFrom(netip.IPv4Unspecified(), 0), nil
	}
	if len(a.IP) == 0 {
		return netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(a.Port)), nil
	}
	ap := a.AddrPort()
	ip := ap.Addr().Unmap()
	if !ip.Is4() {
		return netip.AddrPort{}, fmt.Errorf("%s: IPv6 in the in-process lab: %w", ip, ErrNotSupported)
	}
	return netip.AddrPortFrom(ip, ap.Port()), nil
}

func (h *vhost) listenErr(op, network string, addr net.Addr, err error) error {
	return &net.OpError{Op: op, Net: network, Addr: addr, Err: err}
}

// ListenPacket opens a UDP socket on address ("host:port", IP literals).
func (h *vhost) ListenPacket(network, address string) (net.PacketConn, error) {
	if err := checkUDPNetwork(network); err != nil {
		return nil, err
	}
	local, err := parseAddr(address)
	if err != nil {
		return nil, err
	}
	c, err := h.bind(local, netip.AddrPort{})
	if err != nil {
		return nil, h.listenErr("listen", network, udpAddr(local), err)
	}
	return c, nil
}

// ListenUDP opens a UDP socket on locAddr (nil: any address, any port).
func (h *vhost) ListenUDP(network string, locAddr *net.UDPAddr) (transport.UDPConn, error) {
	if err := checkUDPNetwork(network); err != nil {
		return nil, err
	}
	local, err := fromUDPAddr(locAddr)
	if err != nil {
		return nil, err
	}
	c, err := h.bind(local, netip.AddrPort{})
	if err != nil {
		return nil, h.listenErr("listen", network, udpAddr(local), err)
	}
	return c, nil
}

// DialUDP opens a connected UDP socket. Its local address is fixed to the
// source address the host would use for raddr, as connect(2) does.
func (h *vhost) DialUDP(network string, laddr, raddr *net.UDPAddr) (transport.UDPConn, error) {
	if err := checkUDPNetwork(network); err != nil {
		return nil, err
	}
	if raddr == nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: fmt.Errorf("missing address")}
	}
	local, err := fromUDPAddr(laddr)
	if err != nil {
		return nil, err
	}
	remote, err := h.destination(raddr)
	if err != nil {
		return nil, err
	}
	if local.Addr().IsUnspecified() {
		local = h.sourceFor(local, remote)
	}
	c, err := h.bind(local, remote)
	if err != nil {
		return nil, h.listenErr("dial", network, raddr, err)
	}
	return c, nil
}

// Dial connects a UDP socket; TCP needs the kernel backend.
func (h *vhost) Dial(network, address string) (net.Conn, error) {
	if err := checkUDPNetwork(network); err != nil {
		return nil, err
	}
	raddr, err := h.ResolveUDPAddr(network, address)
	if err != nil {
		return nil, err
	}
	c, err := h.DialUDP(network, nil, raddr)
	if err != nil {
		return nil, err
	}
	return c.(*vconn), nil
}

// ResolveUDPAddr parses an IP literal and a numeric port; there is no DNS.
func (h *vhost) ResolveUDPAddr(network, address string) (*net.UDPAddr, error) {
	if err := checkUDPNetwork(network); err != nil {
		return nil, err
	}
	ap, err := parseAddr(address)
	if err != nil {
		return nil, err
	}
	return udpAddr(ap), nil
}

// ResolveIPAddr parses an IP literal; there is no DNS.
func (h *vhost) ResolveIPAddr(network, address string) (*net.IPAddr, error) {
	switch network {
	case "ip", "ip4":
	default:
		return nil, fmt.Errorf("network %q: %w", network, net.UnknownNetworkError(network))
	}
	ip, err := parseIP(address)
	if err != nil {
		return nil, err
	}
	return &net.IPAddr{IP: ip.AsSlice()}, nil
}

func (h *vhost) ListenTCP(string, *net.TCPAddr) (transport.TCPListener, error) {
	return nil, errTCP
}

func (h *vhost) DialTCP(string, *net.TCPAddr, *net.TCPAddr) (transport.TCPConn, error) {
	return nil, errTCP
}

func (h *vhost) ResolveTCPAddr(string, string) (*net.TCPAddr, error) {
	return nil, errTCP
}

// Interfaces lists lo and eth0 with the host's addresses (/24 each; the
// lab routes by topology, not by prefix).
func (h *vhost) Interfaces() ([]*transport.Interface, error) {
	lo := transport.NewInterface(net.Interface{
		Index: 1, MTU: 65536, Name: "lo", Flags: net.FlagUp | net.FlagLoopback | net.FlagRunning,
	})
	lo.AddAddress(&net.IPNet{IP: loopback.AsSlice(), Mask: net.CIDRMask(8, 32)})
	eth := transport.NewInterface(net.Interface{
		Index: 2, MTU: ethMTU, Name: "eth0",
		// A locally administered MAC derived from the primary address.
		HardwareAddr: append(net.HardwareAddr{0x02, 0x00}, h.addrs[0].AsSlice()...),
		Flags:        net.FlagUp | net.FlagBroadcast | net.FlagMulticast | net.FlagRunning,
	})
	for _, a := range h.addrs {
		eth.AddAddress(&net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(24, 32)})
	}
	return []*transport.Interface{lo, eth}, nil
}

func (h *vhost) InterfaceByIndex(index int) (*transport.Interface, error) {
	ifs, _ := h.Interfaces()
	for _, i := range ifs {
		if i.Index == index {
			return i, nil
		}
	}
	return nil, fmt.Errorf("index %d: %w", index, transport.ErrInterfaceNotFound)
}

func (h *vhost) InterfaceByName(name string) (*transport.Interface, error) {
	ifs, _ := h.Interfaces()
	for _, i := range ifs {
		if i.Name == name {
			return i, nil
		}
	}
	return nil, fmt.Errorf("%q: %w", name, transport.ErrInterfaceNotFound)
}

// CreateDialer returns a Dialer on this host; it honours d.LocalAddr for
// UDP and refuses TCP.
func (h *vhost) CreateDialer(d *net.Dialer) transport.Dialer {
	return &vdialer{host: h, dialer: d}
}

// CreateListenConfig returns a ListenConfig on this host (UDP only).
func (h *vhost) CreateListenConfig(*net.ListenConfig) transport.ListenConfig {
	return &vlistenConfig{host: h}
}

type vdialer struct {
	host   *vhost
	dialer *net.Dialer
}

func (d *vdialer) Dial(network, address string) (net.Conn, error) {
	if err := checkUDPNetwork(network); err != nil {
		return nil, err
	}
	var laddr *net.UDPAddr
	if d.dialer != nil && d.dialer.LocalAddr != nil {
		ua, ok := d.dialer.LocalAddr.(*net.UDPAddr)
		if !ok {
			return nil, fmt.Errorf("dialer local address %T: %w", d.dialer.LocalAddr, transport.ErrNotUDPAddress)
		}
		laddr = ua
	}
	raddr, err := d.host.ResolveUDPAddr(network, address)
	if err != nil {
		return nil, err
	}
	c, err := d.host.DialUDP(network, laddr, raddr)
	if err != nil {
		return nil, err
	}
	return c.(*vconn), nil
}

type vlistenConfig struct{ host *vhost }

func (l *vlistenConfig) Listen(_ context.Context, network, _ string) (net.Listener, error) {
	return nil, fmt.Errorf("listen %s: %w", network, errTCP)
}

func (l *vlistenConfig) ListenPacket(ctx context.Context, network, address string) (net.PacketConn, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("listen %s %s: %w", network, address, err)
	}
	return l.host.ListenPacket(network, address)
}
