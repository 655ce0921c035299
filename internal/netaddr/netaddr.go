// Package netaddr converts between net.Addr and netip forms, the one
// conversion every socket-owning package of natlab needs.
package netaddr

import (
	"net"
	"net/netip"

	"github.com/pion/transport/v4"
)

// AddrPort returns a UDP or TCP address as a netip.AddrPort with any
// IPv4-in-IPv6 mapping removed, so addresses compare equal whichever
// socket family reported them. Other addresses are parsed from their
// string form; nil or unparsable ones give the zero AddrPort.
func AddrPort(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	switch v := a.(type) {
	case *net.UDPAddr:
		ap = v.AddrPort()
	case *net.TCPAddr:
		ap = v.AddrPort()
	case nil:
		return netip.AddrPort{}
	default:
		var err error
		if ap, err = netip.ParseAddrPort(a.String()); err != nil {
			return netip.AddrPort{}
		}
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// Prefixes lists the IPv4 addresses of n's interfaces with their prefix
// lengths (an address reported without a mask counts as a /32). An error
// listing interfaces gives none: callers treat "no interfaces" and
// "cannot tell" alike.
func Prefixes(n transport.Net) []netip.Prefix {
	return prefixes(n, netip.Addr.Is4)
}

// Prefixes6 lists the IPv6 addresses of n's interfaces, as Prefixes does
// the IPv4 ones; link-local addresses are left out (no STUN server or
// peer is reached through one).
func Prefixes6(n transport.Net) []netip.Prefix {
	return prefixes(n, func(a netip.Addr) bool { return a.Is6() && !a.IsLinkLocalUnicast() })
}

func prefixes(n transport.Net, keep func(netip.Addr) bool) []netip.Prefix {
	ifs, err := n.Interfaces()
	if err != nil {
		return nil
	}
	var out []netip.Prefix
	for _, ifc := range ifs {
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			var p netip.Prefix
			switch v := a.(type) {
			case *net.IPNet:
				ip, ok := netip.AddrFromSlice(v.IP)
				ones, _ := v.Mask.Size()
				if !ok {
					continue
				}
				if ip.Is4In6() && ones >= 96 {
					ones -= 96
				}
				p = netip.PrefixFrom(ip.Unmap(), ones)
			case *net.IPAddr:
				ip, ok := netip.AddrFromSlice(v.IP)
				if !ok {
					continue
				}
				p = netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen())
			default:
				var err error
				if p, err = netip.ParsePrefix(a.String()); err != nil {
					continue
				}
				p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits())
			}
			if p.IsValid() && keep(p.Addr()) {
				out = append(out, p)
			}
		}
	}
	return out
}
