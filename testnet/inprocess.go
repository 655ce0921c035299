package testnet

import (
	"context"
	"fmt"
	"hash/fnv"
	"net/netip"
	"sync"
)

// In-process addressing plan. Site i (0-based, in Topology order):
//
//	public / outermost WAN   198.51.100.(10+i)
//	NAT LAN, host            10.0.i.2      (router LAN side 10.0.i.1)
//	double NAT: CGN inside   100.64.i.1, home router WAN 100.64.i.2
//	                         (a third layer would use 100.65.i.x, and so on)
//	open site: host          198.51.100.(10+i) itself; the router (a
//	                         firewall) is reported as 198.51.100.(100+i),
//	                         as on the kernel backend, though in-process it
//	                         is a bridge no packet is addressed to
//
// The server has ServerAddrs. Nothing here touches the machine's network.
const (
	sitePublicBase   = 10  // 198.51.100.(sitePublicBase+i)
	siteFirewallBase = 100 // 198.51.100.(siteFirewallBase+i)
	hostOctet        = 2   // x.y.i.2 is the inside address of a layer
	routerOctet      = 1   // x.y.i.1 is the router's inside address
)

// labSeed seeds every random source of an in-process lab (losses,
// ephemeral and random NAT ports), so a topology behaves the same way in
// every run.
const labSeed = 0x6e61746c6162 // "natlab"

func sitePublic(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 51, 100, byte(sitePublicBase + i)})
}

func siteFirewall(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 51, 100, byte(siteFirewallBase + i)})
}

// world is a running in-process lab: the internet's routing table, the
// links, hosts and NAT layers.
type world struct {
	routes map[netip.Addr]func(packet) // public address → its downlink
	pipes  []*pipe
	hosts  []*vhost
	nats   map[string][]*natLayer // per site, outermost first

	closeOnce sync.Once
}

func seedFor(parts ...string) uint64 {
	h := fnv.New64a()
	for _, p := range parts {
		_, _ = h.Write([]byte(p))
		_, _ = h.Write([]byte{0})
	}
	return h.Sum64() ^ labSeed
}

// route forwards a packet across the internet; unrouted ones vanish, as
// private and unassigned destinations do on the real one.
func (w *world) route(p packet) {
	if f := w.routes[p.dst.Addr()]; f != nil {
		f(p)
	}
}

// link adds both directions of a shaped link and returns them.
func (w *world) link(l Link, name string, upNext, downNext func(packet)) (up, down *pipe) {
	up = newPipe(l, seedFor(name, "up"), upNext)
	down = newPipe(l, seedFor(name, "down"), downNext)
	w.pipes = append(w.pipes, up, down)
	return up, down
}

func (w *world) close() {
	w.closeOnce.Do(func() {
		// Links first: nothing is delivered to a socket after this.
		for _, p := range w.pipes {
			p.close()
		}
		for _, h := range w.hosts {
			h.close()
		}
	})
}

// startInProcess builds the topology inside this process.
//
// What the emulation does, where RFC 4787 leaves a choice:
//   - Mappings are refreshed by outbound packets only (REQ-6); inbound
//     packets never extend them. Expiry is checked when a mapping is used.
//   - Filtering compares an inbound source with the remote addresses
//     (address-dependent) or endpoints (address-and-port-dependent) that
//     the mapping has sent to.
//   - A hairpinned packet takes the sender's mapping as its source and is
//     not filtered, like Linux's DNAT hairpin.
//   - Links without delay deliver in the sender's goroutine: when no link
//     on a path has a delay, a packet not queued at the receiver when
//     WriteTo returns was dropped. A delayed link delivers from one
//     goroutine per direction.
//   - A socket bound to 0.0.0.0 on a single-address host is bound to that
//     address (LocalAddr shows it); on the two-address server it stays a
//     wildcard and sends from ServerAddrs[0].
func startInProcess(ctx context.Context, t Topology) (*Lab, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("start in-process lab: %w", err)
	}
	w := &world{routes: map[netip.Addr]func(packet){}, nats: map[string][]*natLayer{}}
	lab := &Lab{Backend: InProcess, Topology: t, inproc: w}

	server := newVHost("server", ServerAddrs[:], seedFor("server"))
	w.hosts = append(w.hosts, server)
	up, down := w.link(t.ServerLink, "server", w.route, server.deliver)
	server.egress = up.send
	for _, a := range ServerAddrs {
		w.routes[a] = down.send
	}
	lab.Server = &Host{Name: "server", Net: server, Addrs: server.addrs}

	for i, spec := range t.Sites {
		site, err := w.buildSite(i, spec)
		if err != nil {
			w.close()
			return nil, fmt.Errorf("start in-process lab: site %q: %w", spec.Name, err)
		}
		lab.Sites = append(lab.Sites, site)
	}
	lab.close = func() error { w.close(); return nil }
	if err := ctx.Err(); err != nil {
		_ = lab.Close()
		return nil, fmt.Errorf("start in-process lab: %w", err)
	}
	return lab, nil
}

// buildSite wires one site: host → innermost layer → … → outermost layer →
// WAN link → internet, and back.
func (w *world) buildSite(i int, spec SiteSpec) (*Site, error) {
	public := sitePublic(i)
	var cfgs []NAT
	for n := &spec.NAT; n != nil; n = n.Inner {
		cfgs = append(cfgs, *n)
	}
	// Name the layers and give each its outside address; a translating
	// layer puts the next one (or the host) on a fresh inside network.
	layers := make([]*natLayer, len(cfgs))
	outside := public
	routerAddrs := []netip.Addr{public}
	for d, cfg := range cfgs {
		if cfg.Step < 0 {
			return nil, fmt.Errorf("NAT layer %d: negative port step %d", d, cfg.Step)
		}
		name := "nat"
		switch {
		case cfg.Mapping == "":
			name = "firewall"
		case len(cfgs) > 1 && d == 0:
			name = "cgn"
		case len(cfgs) > 1 && d == len(cfgs)-1:
			name = "home"
		case len(cfgs) > 1:
			name = fmt.Sprintf("nat%d", d)
		}
		layers[d] = newNATLayer(name, cfg, outside, seedFor(spec.Name, "nat", name, fmt.Sprint(d)))
		if layers[d].translate {
			inner := netip.AddrFrom4([4]byte{100, byte(64 + d), byte(i), hostOctet})
			router := netip.AddrFrom4([4]byte{100, byte(64 + d), byte(i), routerOctet})
			if d == len(cfgs)-1 && !cfg.Carrier {
				inner = netip.AddrFrom4([4]byte{10, 0, byte(i), hostOctet})
				router = netip.AddrFrom4([4]byte{10, 0, byte(i), routerOctet})
			}
			if d == 0 {
				routerAddrs = append(routerAddrs, router)
			}
			outside = inner
		}
	}
	if !layers[0].translate {
		// The host holds the public address; the firewall in front of it
		// gets the WAN address the kernel backend gives it.
		routerAddrs = []netip.Addr{siteFirewall(i)}
	}

	host := newVHost(spec.Name, []netip.Addr{outside}, seedFor(spec.Name, "host"))
	w.hosts = append(w.hosts, host)
	up, down := w.link(spec.WAN, "site-"+spec.Name, w.route, layers[0].fromWAN)
	w.routes[public] = down.send
	layers[0].up = up.send
	for d := 1; d < len(layers); d++ {
		layers[d].up = layers[d-1].fromLAN
		layers[d-1].down = layers[d].fromWAN
	}
	layers[len(layers)-1].down = host.deliver
	host.egress = layers[len(layers)-1].fromLAN
	w.nats[spec.Name] = layers

	return &Site{
		Spec:   spec,
		Host:   &Host{Name: spec.Name, Net: host, Addrs: host.addrs},
		Router: &Host{Name: "router-" + spec.Name, Addrs: routerAddrs},
		Public: public,
	}, nil
}

// NATs snapshots the NAT layers of an in-process site, outermost first:
// their live mappings and packet counters. It returns nil for an unknown
// site or another backend.
func (l *Lab) NATs(site string) []NATView {
	if l.inproc == nil {
		return nil
	}
	layers := l.inproc.nats[site]
	if layers == nil {
		return nil
	}
	views := make([]NATView, len(layers))
	for i, n := range layers {
		views[i] = n.view()
	}
	return views
}
