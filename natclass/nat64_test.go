package natclass_test

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/natlab/natlab/natclass"
)

// RFC 6052 §2.4's examples: 192.0.2.33 in every prefix length.
func TestSynthesizeRFC6052(t *testing.T) {
	v4 := netip.MustParseAddr("192.0.2.33")
	for _, c := range []struct{ prefix, want string }{
		{"2001:db8::/32", "2001:db8:c000:221::"},
		{"2001:db8:100::/40", "2001:db8:1c0:2:21::"},
		{"2001:db8:122::/48", "2001:db8:122:c000:2:2100::"},
		{"2001:db8:122:300::/56", "2001:db8:122:3c0:0:221::"},
		{"2001:db8:122:344::/64", "2001:db8:122:344:c0:2:2100:0"},
		{"2001:db8:122:344::/96", "2001:db8:122:344::192.0.2.33"},
		{"64:ff9b::/96", "64:ff9b::192.0.2.33"},
	} {
		p := netip.MustParsePrefix(c.prefix)
		got := natclass.Synthesize(p, v4)
		if got != netip.MustParseAddr(c.want) {
			t.Errorf("%s: %s, want %s", c.prefix, got, c.want)
		}
		if back := natclass.Extract(got, p.Bits()); back != v4 {
			t.Errorf("%s: extracted %s", c.prefix, back)
		}
		if learnt, err := natclass.NAT64Prefix([]netip.Addr{natclass.Synthesize(p, natclass.WellKnownIPv4Only[0])}); err != nil || learnt != p {
			t.Errorf("%s: learnt %v (%v)", c.prefix, learnt, err)
		}
	}
	if _, err := natclass.NAT64Prefix([]netip.Addr{netip.MustParseAddr("2001:db8::1")}); !errors.Is(err, natclass.ErrNoNAT64) {
		t.Errorf("a plain AAAA: %v", err)
	}
}

// Via64 synthesises IPv4 destinations only, and From64 undoes exactly
// that.
func TestVia64(t *testing.T) {
	p := netip.MustParsePrefix("2001:db8:64::/96")
	for _, c := range []struct {
		prefix  netip.Prefix
		in, via string
	}{
		{p, "198.51.100.7:4000", "[2001:db8:64::c633:6407]:4000"},
		{p, "[::ffff:198.51.100.7]:4000", "[2001:db8:64::c633:6407]:4000"},
		{p, "[2001:db8:10::10]:3478", "[2001:db8:10::10]:3478"},
		{netip.Prefix{}, "198.51.100.7:4000", "198.51.100.7:4000"},
	} {
		in := netip.MustParseAddrPort(c.in)
		got := natclass.Via64(c.prefix, in)
		if got != netip.MustParseAddrPort(c.via) {
			t.Errorf("Via64(%v, %s) = %s, want %s", c.prefix, in, got, c.via)
		}
		if back := natclass.From64(c.prefix, got); back != netip.AddrPortFrom(in.Addr().Unmap(), in.Port()) {
			t.Errorf("From64(%v, %s) = %s, want %s", c.prefix, got, back, in)
		}
	}
}
