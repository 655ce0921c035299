//go:build linux

package testnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"

	"github.com/pion/transport/v4"
	"github.com/pion/transport/v4/stdnet"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// netnsDir is where named network namespaces are bind-mounted, the same
// place `ip netns add` uses, so `ip netns exec` and `ip netns list` see them.
const netnsDir = "/run/netns"

// inNS runs fn on a fresh OS thread switched into the named namespace.
// Sockets, TUN devices and /proc/sys/net writes made by fn belong to that
// namespace and stay there after the thread switches back.
func inNS[T any](name string, fn func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		var zero T
		// A fresh goroutine so that, if switching back fails, it exits
		// with its thread still locked and the runtime discards the
		// thread instead of reusing it in the wrong namespace.
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{zero, fmt.Errorf("get current netns: %w", err)}
			return
		}
		defer orig.Close()
		target, err := netns.GetFromPath(filepath.Join(netnsDir, name))
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{zero, fmt.Errorf("open netns %s (lab closed?): %w", name, err)}
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			done <- result{zero, fmt.Errorf("enter netns %s: %w", name, err)}
			return
		}
		v, ferr := fn()
		if err := netns.Set(orig); err != nil {
			done <- result{v, errors.Join(ferr, fmt.Errorf("leave netns %s: %w", name, err))}
			return
		}
		runtime.UnlockOSThread()
		done <- result{v, ferr}
	}()
	r := <-done
	return r.v, r.err
}

// newNamedNS creates a network namespace bind-mounted as netnsDir/name,
// without moving the calling thread into it.
func newNamedNS(name string) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("get current netns: %w", err)
			return
		}
		defer orig.Close()
		// NewNamed unshares the calling thread into the new namespace.
		h, nerr := netns.NewNamed(name)
		if nerr == nil {
			h.Close()
		} else {
			if !errors.Is(nerr, os.ErrExist) {
				// NewNamed leaves its mount point behind when the
				// bind mount fails.
				_ = os.Remove(filepath.Join(netnsDir, name))
			}
			nerr = fmt.Errorf("create netns %s: %w", name, nerr)
		}
		// NewNamed may fail before or after the unshare; switch back only
		// if the thread moved (setns itself needs CAP_SYS_ADMIN).
		if cur, err := netns.Get(); err != nil || !cur.Equal(orig) {
			if err == nil {
				cur.Close()
			}
			if err := netns.Set(orig); err != nil {
				done <- errors.Join(nerr, fmt.Errorf("leave netns %s: %w", name, err))
				return
			}
		} else {
			cur.Close()
		}
		runtime.UnlockOSThread()
		done <- nerr
	}()
	return <-done
}

// deleteNamedNS removes a named namespace: the bind mount (the kernel frees
// the namespace, its links and nftables once nothing else holds it) and
// the mount point. A mount point that was never mounted is just removed.
func deleteNamedNS(name string) error {
	path := filepath.Join(netnsDir, name)
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}

// nsNet is a transport.Net whose sockets live in one network namespace:
// every call that creates a socket runs on a thread switched into it.
type nsNet struct {
	ns  string // namespace name under netnsDir
	std *stdnet.Net
}

var _ transport.Net = (*nsNet)(nil)

func newNSNet(ns string) (*nsNet, error) {
	std, err := inNS(ns, stdnet.NewNet) // reads the namespace's interfaces
	if err != nil {
		return nil, fmt.Errorf("net in %s: %w", ns, err)
	}
	return &nsNet{ns: ns, std: std}, nil
}

func (n *nsNet) ListenPacket(network, address string) (net.PacketConn, error) {
	return inNS(n.ns, func() (net.PacketConn, error) { return n.std.ListenPacket(network, address) })
}

func (n *nsNet) ListenUDP(network string, laddr *net.UDPAddr) (transport.UDPConn, error) {
	return inNS(n.ns, func() (transport.UDPConn, error) { return n.std.ListenUDP(network, laddr) })
}

func (n *nsNet) ListenTCP(network string, laddr *net.TCPAddr) (transport.TCPListener, error) {
	return inNS(n.ns, func() (transport.TCPListener, error) { return n.std.ListenTCP(network, laddr) })
}

func (n *nsNet) Dial(network, address string) (net.Conn, error) {
	return inNS(n.ns, func() (net.Conn, error) { return n.std.Dial(network, address) })
}

func (n *nsNet) DialUDP(network string, laddr, raddr *net.UDPAddr) (transport.UDPConn, error) {
	return inNS(n.ns, func() (transport.UDPConn, error) { return n.std.DialUDP(network, laddr, raddr) })
}

func (n *nsNet) DialTCP(network string, laddr, raddr *net.TCPAddr) (transport.TCPConn, error) {
	return inNS(n.ns, func() (transport.TCPConn, error) { return n.std.DialTCP(network, laddr, raddr) })
}

func (n *nsNet) ResolveIPAddr(network, address string) (*net.IPAddr, error) {
	return n.std.ResolveIPAddr(network, address)
}

func (n *nsNet) ResolveUDPAddr(network, address string) (*net.UDPAddr, error) {
	return n.std.ResolveUDPAddr(network, address)
}

func (n *nsNet) ResolveTCPAddr(network, address string) (*net.TCPAddr, error) {
	return n.std.ResolveTCPAddr(network, address)
}

// Interfaces reads the namespace's interfaces afresh on every call.
func (n *nsNet) Interfaces() ([]*transport.Interface, error) {
	return inNS(n.ns, func() ([]*transport.Interface, error) {
		ifs, err := net.Interfaces()
		if err != nil {
			return nil, fmt.Errorf("interfaces: %w", err)
		}
		out := make([]*transport.Interface, 0, len(ifs))
		for i := range ifs {
			ifc := transport.NewInterface(ifs[i])
			addrs, err := ifs[i].Addrs()
			if err != nil {
				return nil, fmt.Errorf("addresses of %s: %w", ifs[i].Name, err)
			}
			for _, a := range addrs {
				ifc.AddAddress(a)
			}
			out = append(out, ifc)
		}
		return out, nil
	})
}

func (n *nsNet) InterfaceByIndex(index int) (*transport.Interface, error) {
	ifs, err := n.Interfaces()
	if err != nil {
		return nil, err
	}
	for _, ifc := range ifs {
		if ifc.Index == index {
			return ifc, nil
		}
	}
	return nil, fmt.Errorf("interface index %d in %s: %w", index, n.ns, transport.ErrInterfaceNotFound)
}

func (n *nsNet) InterfaceByName(name string) (*transport.Interface, error) {
	ifs, err := n.Interfaces()
	if err != nil {
		return nil, err
	}
	for _, ifc := range ifs {
		if ifc.Name == name {
			return ifc, nil
		}
	}
	return nil, fmt.Errorf("interface %q in %s: %w", name, n.ns, transport.ErrInterfaceNotFound)
}

func (n *nsNet) CreateDialer(d *net.Dialer) transport.Dialer {
	return nsDialer{n: n, d: d}
}

func (n *nsNet) CreateListenConfig(lc *net.ListenConfig) transport.ListenConfig {
	return nsListenConfig{n: n, lc: lc}
}

type nsDialer struct {
	n *nsNet
	d *net.Dialer
}

// Dial creates the socket inside the namespace; with an IP literal the
// connect happens on the same (switched) thread.
func (d nsDialer) Dial(network, address string) (net.Conn, error) {
	return inNS(d.n.ns, func() (net.Conn, error) { return d.d.Dial(network, address) })
}

type nsListenConfig struct {
	n  *nsNet
	lc *net.ListenConfig
}

func (l nsListenConfig) Listen(ctx context.Context, network, address string) (net.Listener, error) {
	return inNS(l.n.ns, func() (net.Listener, error) { return l.lc.Listen(ctx, network, address) })
}

func (l nsListenConfig) ListenPacket(ctx context.Context, network, address string) (net.PacketConn, error) {
	return inNS(l.n.ns, func() (net.PacketConn, error) { return l.lc.ListenPacket(ctx, network, address) })
}
