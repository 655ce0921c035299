package holepunch

import (
	"net/netip"

	"github.com/pion/transport/v4"

	"github.com/natlab/natlab/internal/netaddr"
)

// udpSocket is the network and wildcard address of a UDP socket that
// talks to peer: IPv6 for an IPv6 peer, else IPv4. A technique runs over
// one family, so its sockets follow the address it punches toward.
func udpSocket(peer netip.Addr) (network, laddr string) {
	if peer.Is6() && !peer.Is4In6() {
		return "udp6", "[::]:0"
	}
	return "udp4", "0.0.0.0:0"
}

// tcpNetwork is the network of a TCP socket that talks to peer.
func tcpNetwork(peer netip.Addr) string {
	if peer.Is6() && !peer.Is4In6() {
		return "tcp6"
	}
	return "tcp4"
}

// firstAddr is the address of the first candidate, the one that decides
// a punch's family (candidates of one technique share it).
func firstAddr(cs []Candidate) netip.Addr {
	if len(cs) == 0 {
		return netip.Addr{}
	}
	return cs[0].Addr.Addr()
}

// HostCandidates6 are port on every global or unique-local IPv6 address
// of n's interfaces (link-local ones are left out: they need a zone),
// as HostCandidates are for IPv4.
func HostCandidates6(n transport.Net, port uint16) []Candidate {
	var out []Candidate
	for _, p := range netaddr.Prefixes6(n) {
		if ip := p.Addr(); !ip.IsLoopback() && !ip.IsUnspecified() {
			out = append(out, Candidate{Kind: Host, Addr: netip.AddrPortFrom(ip, port)})
		}
	}
	return out
}
