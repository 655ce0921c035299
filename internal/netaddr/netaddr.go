// Package netaddr converts between net.Addr and netip forms, the one
// conversion every socket-owning package of natlab needs.
package netaddr

import (
	"net"
	"net/netip"
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
