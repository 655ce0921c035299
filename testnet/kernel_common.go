package testnet

// The kernel backend's declarations that callers use on every platform
// (the backend itself is Linux-only: kernel*.go, nsnet.go).

import (
	"errors"
	"net/netip"
)

// ErrNeedPrivileges is returned when the kernel lab cannot create network
// namespaces, links or nftables rules for lack of privileges.
var ErrNeedPrivileges = errors.New("kernel lab needs root or CAP_NET_ADMIN")

// ErrKernelNeedsLinux is returned by the kernel backend on other systems:
// it is built from Linux network namespaces, veth links and nftables. It
// also matches ErrNeedPrivileges and ErrNotSupported, so whoever skips the
// kernel lab when this host cannot build it skips it there too.
var ErrKernelNeedsLinux error = kernelNeedsLinux{}

type kernelNeedsLinux struct{}

func (kernelNeedsLinux) Error() string {
	return "the kernel lab needs Linux (network namespaces and nftables)"
}

func (kernelNeedsLinux) Is(target error) bool {
	return target == ErrNeedPrivileges || target == ErrNotSupported
}

// NAT64Prefix is the lab's network-specific NAT64 prefix (RFC 6052),
// used by the nat64 preset's tayga and unbound (kernel_nat64.go).
var NAT64Prefix = netip.MustParsePrefix("2001:db8:64::/96")

// MiniUPnPd is where the kernel lab looks for miniupnpd first (Debian's
// path); otherwise $PATH is searched.
var MiniUPnPd = "/usr/sbin/miniupnpd"

// ErrNoMiniUPnPd is returned (wrapped) when a NAT asks for port mapping and
// miniupnpd is not installed.
var ErrNoMiniUPnPd = errors.New("miniupnpd not found (apt install miniupnpd)")

// Gateway is the host's default gateway: the LAN address of the router in
// front of it (the home router of a double NAT, not Router), where port
// mapping is asked for; for a site without NAT, the router's address.
// Both backends number a site's LAN the same way (router .1, host .2).
func (s *Site) Gateway() netip.Addr {
	h := s.Host.Addr()
	if h.Is4() && netip.MustParsePrefix("10.0.0.0/16").Contains(h) {
		a := h.As4()
		a[3] = 1
		return netip.AddrFrom4(a)
	}
	return s.Router.Addrs[0]
}
