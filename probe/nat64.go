package probe

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/natlab/natlab/holepunch"
	"github.com/natlab/natlab/natclass"
)

// An IPv6-only host (a mobile network, an IPv6-only data centre) reaches
// IPv4 through a NAT64 (RFC 6146) whose prefix DNS64 gives away (RFC
// 7050). The probe then does what the IPv4 techniques need through it:
// it profiles the NAT64's IPv4 side at the server's synthesised address
// (the IPv4 NAT the peer will meet), pairs over that address (or over
// Options.Server6), punches from IPv6 sockets toward the peer's IPv4
// candidates at their synthesised addresses, and offers the peer the
// IPv4 address the server saw. The predictions come from that measured
// profile like any other; nothing is assumed of a NAT64.

// profile4 profiles this host's IPv4 side against Options.Server: over
// IPv4, or, when the server is unreachable that way and a NAT64 is found,
// through the NAT64 (a.nat64 and a.srv are then set to go through it).
// Without a NAT64 the unreachable error stands, with why none was found.
func (a *agent) profile4(ctx context.Context) (*natclass.Profile, error) {
	p, err := natclass.Discover(ctx, natclass.Options{Net: a.o.Net, Servers: []string{a.o.Server}, Logger: a.log})
	if !errors.Is(err, natclass.ErrServerUnreachable) || !a.srv.Addr().Is4() {
		return p, err
	}
	a.emit(Event{Stage: StageProfile, Message: "no IPv4 path to " + a.o.Server + ": looking for a NAT64 (RFC 7050)"})
	prefix, nerr := natclass.DiscoverNAT64(ctx, a.o.Net, a.o.DNS64)
	if nerr != nil {
		resolver := "the system resolver"
		if a.o.DNS64 != "" {
			resolver = "DNS64 resolver " + a.o.DNS64
		}
		return nil, fmt.Errorf("%w; no NAT64 to reach it through (asked %s): %w", err, resolver, nerr)
	}
	p, err = natclass.Discover(ctx, natclass.Options{Net: a.o.Net, Servers: []string{a.o.Server}, Family: natclass.IPv6,
		NAT64: prefix, Logger: a.log})
	if err != nil {
		return nil, fmt.Errorf("through the NAT64 %s: %w", prefix, err)
	}
	a.nat64 = prefix
	a.srv = natclass.Via64(prefix, a.srv)
	a.emit(Event{Stage: StageProfile, Message: fmt.Sprintf("NAT64 prefix %s: reaching IPv4 through it (the server at %s)", prefix, a.srv)})
	return p, nil
}

// rzServer is where to pair: Options.Server, or behind a NAT64 the
// server's IPv6 address when given, else its synthesised one.
func (a *agent) rzServer() string {
	switch {
	case !a.nat64.IsValid():
		return a.o.Server
	case a.o.Server6 != "":
		return a.o.Server6
	}
	return a.srv.String()
}

// via is where this host sends to reach the peer's IPv4 address ap: its
// synthesised address behind a NAT64, ap itself otherwise.
func (a *agent) via(ap netip.AddrPort) netip.AddrPort { return natclass.Via64(a.nat64, ap) }

// through64 makes f, the IPv4 plan's family, go through the NAT64 when
// this host reaches IPv4 that way: IPv6 sockets (srv is already the
// server's synthesised address), the peer's candidates synthesised.
func (f *family) through64(prefix netip.Prefix) {
	if prefix.IsValid() {
		f.udp, f.tcp, f.wildcard, f.nat64 = "udp6", "tcp6", "[::]:0", prefix
	}
}

// reach is the peer's candidates as this host must address them in f.
func (f *family) reach(cs []holepunch.Candidate) []holepunch.Candidate {
	if !f.nat64.IsValid() {
		return cs
	}
	out := make([]holepunch.Candidate, len(cs))
	for i, c := range cs {
		c.Addr = natclass.Via64(f.nat64, c.Addr)
		out[i] = c
	}
	return out
}

// nat64Verdict says, behind a NAT64, that the IPv4 verdict went through
// it: an application on this host reaches the peer's IPv4 address at its
// synthesised address, or through a relay reached that way.
func nat64Verdict(v Verdict, prefix netip.Prefix) Verdict {
	if !prefix.IsValid() {
		return v
	}
	v.Summary += fmt.Sprintf("; IPv4 here goes through a NAT64 (prefix %s, from DNS64): the peer's IPv4 address is reached at its synthesised IPv6 address", prefix)
	return v
}

// relayVia is the relay configuration as this host reaches it: behind a
// NAT64, the TURN server's IPv4 literals at their synthesised addresses
// (the server then sees an IPv4 client and relays in IPv4, which the
// peer reaches as usual). Names are left to the resolver, which DNS64
// answers with synthesised addresses.
func (a *agent) relayVia(cfg RelayConfig) RelayConfig {
	for _, s := range []*string{&cfg.Server, &cfg.TLSServer} {
		if ap, err := netip.ParseAddrPort(*s); err == nil {
			*s = a.via(ap).String()
		}
	}
	return cfg
}
