package testnet

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"sync"

	"github.com/pion/transport/v4"
)

// Backend selects how a lab is built.
type Backend string

// The two backends.
const (
	// InProcess emulates the network inside this process: no privileges,
	// UDP only, deterministic and fast.
	InProcess Backend = "in-process"
	// Kernel builds Linux network namespaces with veth links and real
	// nftables/conntrack NAT: UDP and TCP, needs CAP_NET_ADMIN.
	Kernel Backend = "kernel"
)

// Addressing plan, shared by both backends so that their reports compare.
// Public addresses come only from the documentation ranges.
var (
	// ServerAddrs are the server's two public addresses (RFC 5780 needs two).
	ServerAddrs = [2]netip.Addr{netip.MustParseAddr("203.0.113.10"), netip.MustParseAddr("203.0.113.11")}
)

// ErrNotSupported is returned for what a backend cannot emulate (for
// example TCP in-process).
var ErrNotSupported = errors.New("not supported by this lab backend")

// Host is one machine of the lab.
type Host struct {
	// Name is "server" or the site name.
	Name string
	// Net opens sockets on this host; hand it to anything that takes a
	// transport.Net.
	Net transport.Net
	// Addrs are the host's own addresses (the server has two).
	Addrs []netip.Addr
	// Addrs6 are its IPv6 addresses, in a lab with IPv6 sites (kernel
	// backend): the server has two, a dual-stack site's host one.
	Addrs6 []netip.Addr
	// Namespace is the network namespace on the kernel backend, "" in-process.
	Namespace string

	command func(ctx context.Context, name string, args ...string) *exec.Cmd
}

// Addr is the host's primary address.
func (h *Host) Addr() netip.Addr { return h.Addrs[0] }

// Command returns a command that runs inside the host's network namespace.
// Only the kernel backend can run external programs.
func (h *Host) Command(ctx context.Context, name string, args ...string) (*exec.Cmd, error) {
	if h.command == nil {
		return nil, fmt.Errorf("run %s on host %s: %w", name, h.Name, ErrNotSupported)
	}
	return h.command(ctx, name, args...), nil
}

// Site is a NAT router and the host behind it.
type Site struct {
	Spec SiteSpec
	// Host is the machine behind the NAT.
	Host *Host
	// Router is the (outermost) NAT router; on the kernel backend its
	// Command runs tools such as `conntrack -L` inside it.
	Router *Host
	// Public is the address the site shows to the internet.
	Public netip.Addr
	// Public6 is the IPv6 address the host is seen with: its own, its
	// NPTv6-translated one or the masquerading router's (dual-stack sites);
	// behind NAT64 the site's IPv4 address, which the server sees.
	Public6 netip.Addr
	// DNS64 is the site's DNS64 resolver (IPv6-only sites behind NAT64).
	DNS64 netip.AddrPort
}

// Lab is a running topology. Close it to tear everything down.
type Lab struct {
	// ID names a kernel lab: its namespaces are natlab-<ID>-<role>; ""
	// in-process.
	ID       string
	Backend  Backend
	Topology Topology
	Server   *Host
	Sites    []*Site

	closeMu sync.Mutex // Close may race with itself (a signal handler and a defer)
	close   func() error
	inproc  *world // the in-process network, for NATs; nil on the kernel backend
}

// Site returns the site with the given name, or nil.
func (l *Lab) Site(name string) *Site {
	for _, s := range l.Sites {
		if s.Spec.Name == name {
			return s
		}
	}
	return nil
}

// Close tears the lab down. It is safe to call more than once.
func (l *Lab) Close() error {
	l.closeMu.Lock()
	c := l.close
	l.close = nil
	l.closeMu.Unlock()
	if c == nil {
		return nil
	}
	return c()
}

// Start builds the topology on the chosen backend. The lab is torn down if
// ctx ends before Start returns; afterwards the caller must Close it.
func Start(ctx context.Context, t Topology, b Backend) (*Lab, error) {
	if err := t.validate(); err != nil {
		return nil, err
	}
	switch b {
	case InProcess, "":
		for _, s := range t.Sites {
			if s.NAT.HasPortMapping() {
				return nil, fmt.Errorf("site %s: port mapping (%s) runs miniupnpd and needs the kernel backend: %w", s.Name, PortMappingSuffix, ErrNotSupported)
			}
		}
		if t.ipv6() {
			return nil, fmt.Errorf("IPv6 sites need the kernel backend: %w", ErrNotSupported)
		}
		if t.shared() {
			// The in-process NATs have no IP TTL and no local stack that
			// records unsolicited packets, so a shared segment would
			// behave exactly like a routed one there.
			return nil, fmt.Errorf("topology %q needs the kernel backend: %w", Shared, ErrNotSupported)
		}
		return startInProcess(ctx, t)
	case Kernel:
		return startKernel(ctx, t)
	}
	return nil, fmt.Errorf("unknown lab backend %q (want %q or %q)", b, InProcess, Kernel)
}

func (t Topology) validate() error {
	if _, err := ParseSegment(string(t.Segment)); err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, s := range t.Sites {
		if s.Name == "" || len(s.Name) > 4 {
			return fmt.Errorf("site name %q: want 1 to 4 characters", s.Name)
		}
		for _, r := range s.Name {
			if (r < 'a' || r > 'z') && (r < '0' || r > '9') {
				return fmt.Errorf("site name %q: want [a-z0-9]", s.Name)
			}
		}
		if seen[s.Name] {
			return fmt.Errorf("site %q defined twice", s.Name)
		}
		seen[s.Name] = true
		for _, l := range []Link{s.WAN} {
			if l.Loss < 0 || l.Loss >= 1 || l.Delay < 0 {
				return fmt.Errorf("site %q: link delay must be >= 0 and loss in [0,1)", s.Name)
			}
		}
	}
	if len(t.Sites) > 8 {
		return fmt.Errorf("%d sites: the lab supports at most 8", len(t.Sites))
	}
	return nil
}
