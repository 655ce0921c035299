package holepunch

import (
	"net/netip"

	"github.com/pion/transport/v4"

	"github.com/natlab/natlab/internal/netaddr"
)

// HostCandidates are port on every non-loopback IPv4 address of n's
// interfaces: where a peer on the same LAN reaches this host.
func HostCandidates(n transport.Net, port uint16) []Candidate {
	var out []Candidate
	for _, p := range netaddr.Prefixes(n) {
		if ip := p.Addr(); !ip.IsLoopback() && !ip.IsUnspecified() {
			out = append(out, Candidate{Kind: Host, Addr: netip.AddrPortFrom(ip, port)})
		}
	}
	return out
}
