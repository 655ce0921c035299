package cmd

import (
	"context"
	"fmt"
	"io"
	"net/netip"

	"github.com/pion/transport/v4"

	"github.com/natlab/natlab/natclass"
)

// familyResult is one family's check.
type familyResult struct {
	p   *natclass.Profile
	err error
}

// serversOf are the --server values an f check can use: literal IPs of
// that family, and names (resolved in that family).
func serversOf(servers []string, f natclass.Family) []string {
	var out []string
	for _, s := range servers {
		host, _, err := natclass.ParseServer(s)
		if err != nil {
			continue
		}
		if ip, err := netip.ParseAddr(host); err == nil && natclass.FamilyOf(ip) != f {
			continue
		}
		out = append(out, s)
	}
	return out
}

// checkFamilies picks the families to check, the first being the one the
// top-level profile shows: IPv4 whenever it is checked, so v1 consumers
// keep reading an IPv4 profile.
func checkFamilies(o *CheckOptions, n transport.Net) ([]natclass.Family, error) {
	has4 := len(serversOf(o.Servers, natclass.IPv4)) > 0
	has6 := len(serversOf(o.Servers, natclass.IPv6)) > 0
	need := func(f natclass.Family, ok bool) error {
		if ok {
			return nil
		}
		return flagErrorf("--family %s: no %s --server given (an %s literal, or a name with %s addresses)", o.Family, f, f, f)
	}
	switch o.Family {
	case "4":
		return []natclass.Family{natclass.IPv4}, need(natclass.IPv4, has4)
	case "6":
		return []natclass.Family{natclass.IPv6}, need(natclass.IPv6, has6)
	case "both":
		if err := need(natclass.IPv4, has4); err != nil {
			return nil, err
		}
		return []natclass.Family{natclass.IPv4, natclass.IPv6}, need(natclass.IPv6, has6)
	}
	switch {
	case !has4:
		return []natclass.Family{natclass.IPv6}, nil
	case has6 && natclass.HasGlobal6(n):
		// A name is checked in IPv6 too; one without AAAA records
		// leaves only ipv6_error beside the IPv4 profile.
		return []natclass.Family{natclass.IPv4, natclass.IPv6}, nil
	}
	return []natclass.Family{natclass.IPv4}, nil
}

// discoverFamily runs one family's check.
func discoverFamily(ctx context.Context, o *CheckOptions, n transport.Net, f natclass.Family) familyResult {
	p, err := natclass.Discover(ctx, natclass.Options{Net: n, Servers: serversOf(o.Servers, f), Timeout: o.Timeout,
		Lifetime: o.Lifetime, NoTCP: !o.TCP, Family: f})
	return familyResult{p, err}
}

// writeFamilies prints the profile, and the IPv6 one after it under its
// own heading when both families were checked.
func writeFamilies(w io.Writer, doc checkDocument, both bool) error {
	if !both {
		return writeProfile(w, doc.Profile, doc.PortMapping)
	}
	fmt.Fprintln(w, "IPv4")
	if err := writeProfile(w, doc.Profile, doc.PortMapping); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nIPv6")
	if doc.IPv6 == nil {
		_, err := fmt.Fprintf(w, "no profile: %s\n", doc.IPv6Error)
		return err
	}
	return writeProfile(w, doc.IPv6, nil)
}

// translationLine explains a Profile.Translation value.
func translationLine(t string) string {
	switch t {
	case natclass.TranslationNone:
		return "none (the server saw this host's own address)"
	case natclass.TranslationNPTv6:
		return "NPTv6 (prefix translated, interface identifier and port kept)"
	case natclass.TranslationNAT66:
		return "NAT66 (address replaced: a masquerading NAT)"
	case natclass.TranslationNAT64:
		return "NAT64 (IPv6-only; the server saw the NAT64's IPv4 side)"
	}
	return t
}

// discoverNAT64 looks for a NAT64 (RFC 7050) and, when there is one,
// checks the IPv4 servers through it: the profile of the NAT64's IPv4
// side. ok is false when there is no NAT64 (the caller keeps its error).
func discoverNAT64(ctx context.Context, o *CheckOptions, n transport.Net) (familyResult, bool) {
	prefix, err := natclass.DiscoverNAT64(ctx, n, o.DNS64)
	if err != nil {
		return familyResult{}, false
	}
	p, err := natclass.Discover(ctx, natclass.Options{Net: n, Servers: serversOf(o.Servers, natclass.IPv4), Timeout: o.Timeout,
		Lifetime: o.Lifetime, NoTCP: !o.TCP, Family: natclass.IPv6, NAT64: prefix})
	return familyResult{p, err}, true
}
