package natclass

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/pion/transport/v4"
)

// NAT64 discovery (RFC 7050): on an IPv6-only network with DNS64, the
// AAAA records of ipv4only.arpa (whose only records are A 192.0.0.170
// and 192.0.0.171) are synthesised from those addresses, so where the
// well-known address sits in them gives the NAT64 prefix.

// WellKnownIPv4Only are ipv4only.arpa's A records (RFC 7050 §2.1).
var WellKnownIPv4Only = [2]netip.Addr{netip.MustParseAddr("192.0.0.170"), netip.MustParseAddr("192.0.0.171")}

// ipv4onlyName is the name RFC 7050 resolves.
const ipv4onlyName = "ipv4only.arpa"

// nat64Timeout bounds the AAAA lookup: a resolver answers in one round
// trip; a network without DNS64 answers "no AAAA" just as fast.
const nat64Timeout = 2 * time.Second

// ErrNoNAT64 means the resolver synthesised no AAAA for ipv4only.arpa:
// no DNS64, so (as far as RFC 7050 can tell) no NAT64.
var ErrNoNAT64 = errors.New("no NAT64: ipv4only.arpa has no AAAA record here (no DNS64)")

// rfc6052Lengths are the prefix lengths RFC 6052 §2.2 allows.
var rfc6052Lengths = []int{96, 64, 56, 48, 40, 32}

// Synthesize embeds v4 in the NAT64 prefix p (RFC 6052 §2.2: bits 64-71
// stay zero).
func Synthesize(p netip.Prefix, v4 netip.Addr) netip.Addr {
	b := p.Masked().Addr().As16()
	four := v4.Unmap().As4()
	pos := p.Bits() / 8
	for _, x := range four {
		if pos == 8 {
			pos++ // the u octet
		}
		b[pos] = x
		pos++
	}
	return netip.AddrFrom16(b)
}

// Via64 is where an IPv6-only host sends to reach ap through the NAT64
// with prefix p: ap's synthesised address when ap is IPv4 and p is
// valid, else ap itself.
func Via64(p netip.Prefix, ap netip.AddrPort) netip.AddrPort {
	if p.IsValid() && ap.Addr().Unmap().Is4() {
		return netip.AddrPortFrom(Synthesize(p, ap.Addr()), ap.Port())
	}
	return ap
}

// From64 is the IPv4 address behind ap when ap is inside the NAT64
// prefix p (the inverse of Via64), else ap itself.
func From64(p netip.Prefix, ap netip.AddrPort) netip.AddrPort {
	if p.IsValid() && p.Contains(ap.Addr()) {
		return netip.AddrPortFrom(Extract(ap.Addr(), p.Bits()), ap.Port())
	}
	return ap
}

// Extract returns the IPv4 address embedded in a with prefix length
// bits, the inverse of Synthesize.
func Extract(a netip.Addr, bits int) netip.Addr {
	b := a.As16()
	var four [4]byte
	pos := bits / 8
	for i := range four {
		if pos == 8 {
			pos++
		}
		four[i] = b[pos]
		pos++
	}
	return netip.AddrFrom4(four)
}

// NAT64Prefix learns the prefix from ipv4only.arpa's synthesised AAAA
// records (RFC 7050 §3): the longest RFC 6052 length at which one holds a
// well-known address, and whose other bits the record agrees with.
func NAT64Prefix(aaaa []netip.Addr) (netip.Prefix, error) {
	for _, a := range aaaa {
		if !a.Is6() || a.Is4In6() {
			continue
		}
		for _, bits := range rfc6052Lengths {
			v4 := Extract(a, bits)
			if v4 != WellKnownIPv4Only[0] && v4 != WellKnownIPv4Only[1] {
				continue
			}
			p := netip.PrefixFrom(a, bits).Masked()
			if Synthesize(p, v4) == a {
				return p, nil
			}
		}
	}
	return netip.Prefix{}, fmt.Errorf("%w (AAAA %v hold neither 192.0.0.170 nor .171 at an RFC 6052 position)", ErrNoNAT64, aaaa)
}

// DiscoverNAT64 resolves ipv4only.arpa's AAAA records over n, through
// resolver (host:port, e.g. "[2001:db8::53]:53"; "" for the system
// resolver) and returns the NAT64 prefix.
func DiscoverNAT64(ctx context.Context, n transport.Net, resolver string) (netip.Prefix, error) {
	ctx, cancel := context.WithTimeout(ctx, nat64Timeout)
	defer cancel()
	r := net.DefaultResolver
	if resolver != "" {
		r = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			d := n.CreateDialer(&net.Dialer{Cancel: ctx.Done()}) // DialContext is not in transport.Dialer
			return d.Dial(network, resolver)
		}}
	}
	ips, err := r.LookupIP(ctx, "ip6", ipv4onlyName)
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
		return netip.Prefix{}, ErrNoNAT64
	}
	if dnsErr != nil && resolver != "" {
		// Go names the system's resolver; the query went to ours.
		dnsErr.Server = resolver
	}
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("resolve %s AAAA: %w", ipv4onlyName, err)
	}
	var aaaa []netip.Addr
	for _, ip := range ips {
		if a, ok := netip.AddrFromSlice(ip); ok {
			aaaa = append(aaaa, a)
		}
	}
	return NAT64Prefix(aaaa)
}

// readTrace64 reads a hop trace through a NAT64 (RFC 6146, RFC 7915):
// the translator turns the ICMPv4 errors of the IPv4 routers beyond it
// into ICMPv6 ones from their addresses synthesised under the prefix p,
// so those hops are read as an IPv4 trace reads its own (private or the
// NAT's mapped address: inside; public: beyond). The IPv6 hops before
// the first of them lead to the translator, and an opening packet must
// pass them all: when the translator's IPv4 side is already public, the
// NAT64 itself is the NAT, and the depth is the hops up to it.
func readTrace64(hops []netip.Addr, end int, reached bool, server, mapped netip.Addr, p netip.Prefix) hopsOutcome {
	first := slices.IndexFunc(hops, func(h netip.Addr) bool { return h.IsValid() && p.Contains(h) })
	if first < 0 {
		return hopsOutcome{reason: fmt.Sprintf("no hop answered from beyond the NAT64 (prefix %s) within %d hops", p, len(hops))}
	}
	v4 := slices.Clone(hops)
	for i, h := range v4 {
		if h.IsValid() && p.Contains(h) {
			v4[i] = Extract(h, p.Bits())
		}
	}
	o := readTraceFrom(v4, end, reached, From64(p, netip.AddrPortFrom(server, 0)).Addr(), mapped, true, first)
	o.nat64 = true
	return o
}
