package natclass

import (
	"fmt"
	"net/netip"

	"github.com/pion/transport/v4"

	"github.com/natlab/natlab/internal/netaddr"
)

// Family is the IP version a check runs over. One check measures one
// family: its sockets, the servers it resolves and every address it
// compares are of that family.
type Family int

// Families.
const (
	IPv4 Family = 4
	IPv6 Family = 6
)

func (f Family) String() string { return fmt.Sprintf("IPv%d", f.v()) }

// v is the family with the zero value meaning IPv4 (the default).
func (f Family) v() int {
	if f == IPv6 {
		return 6
	}
	return 4
}

func (f Family) udp() string { return fmt.Sprintf("udp%d", f.v()) }
func (f Family) tcp() string { return fmt.Sprintf("tcp%d", f.v()) }

// wildcard is the unspecified address, port 0, to bind a socket on.
func (f Family) wildcard() string {
	if f.v() == 6 {
		return "[::]:0"
	}
	return "0.0.0.0:0"
}

func (f Family) unspecified() netip.Addr {
	if f.v() == 6 {
		return netip.IPv6Unspecified()
	}
	return netip.IPv4Unspecified()
}

// has reports whether ip is of family f.
func (f Family) has(ip netip.Addr) bool { return ip.Is4() == (f.v() == 4) }

// FamilyOf is the family of ip.
func FamilyOf(ip netip.Addr) Family {
	if ip.Unmap().Is4() {
		return IPv4
	}
	return IPv6
}

// IPv6 translations (Profile.Translation).
const (
	TranslationNone  = "none"
	TranslationNPTv6 = "nptv6"
	TranslationNAT66 = "nat66"
	// TranslationNAT64: an IPv6 host reaching an IPv4 server through a
	// NAT64 (Options.NAT64); the server saw the NAT64's IPv4 address.
	TranslationNAT64 = "nat64"
)

// via is where to send to reach ap: its synthesised address when the
// check goes through a NAT64 and ap is IPv4.
func (d *discovery) via(ap netip.AddrPort) netip.AddrPort {
	return Via64(d.opts.NAT64, ap)
}

// Translation6 says how an IPv6 source address was translated, from the
// local address and the one the server saw. NPTv6 (RFC 6296) rewrites
// the prefix only: the interface identifier (the low 64 bits; a
// checksum-neutral NPTv6 adjusts a word of a /48's subnet field, not
// these) and the port survive. A masquerading NAT66 puts its own address
// in, whose interface identifier is the router's.
func Translation6(local, mapped netip.AddrPort) string {
	if local == mapped {
		return TranslationNone
	}
	l, m := local.Addr().As16(), mapped.Addr().As16()
	if local.Port() == mapped.Port() && [8]byte(l[8:]) == [8]byte(m[8:]) {
		return TranslationNPTv6
	}
	return TranslationNAT66
}

// globalAddresses lists the host's global IPv6 addresses: unique-local
// (fc00::/7) and link-local ones reach no server outside the site.
func (d *discovery) globalAddresses() []string {
	var out []string
	for _, p := range netaddr.Prefixes6(d.opts.Net) {
		if a := p.Addr(); a.IsGlobalUnicast() && !a.IsPrivate() {
			out = append(out, a.String())
		}
	}
	return out
}

// HasGlobal6 reports whether n has a global IPv6 address: `natlab check`
// then checks both families by default.
func HasGlobal6(n transport.Net) bool {
	d := &discovery{opts: Options{Net: n}}
	return len(d.globalAddresses()) > 0
}
