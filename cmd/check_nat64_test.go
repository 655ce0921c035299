package cmd

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/natlab/natlab/internal/labtest"
	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/testnet"
)

// `natlab check` on an IPv6-only host of the kernel lab (tayga NAT64,
// unbound DNS64): the IPv4 server is unreachable over IPv4, so check
// learns the NAT64 prefix from ipv4only.arpa (RFC 7050) through --dns64
// and classifies the NAT64's IPv4 side through the synthesised address.
func TestCheckThroughNAT64(t *testing.T) {
	topo, err := testnet.IPv6Topology("nat64")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tl := labtest.Kernel(t, ctx, topo)
	labtest.Servers(t, tl)
	site := tl.Sites[0]
	for _, json := range []bool{true, false} {
		s, out, errOut := testStreams()
		c := NewCmdCheck(s, func(ctx context.Context, o *CheckOptions) error {
			o.Net = site.Host.Net
			return runCheck(ctx, o)
		})
		args := []string{"--portmap=false", "--dns64", site.DNS64.String(), "--server", labtest.Server(tl)}
		if json {
			args = append(args, "--json")
		}
		c.SetArgs(args)
		c.SetOut(s.Out)
		c.SetErr(s.ErrOut)
		if err := c.ExecuteContext(ctx); err != nil {
			t.Fatalf("check: %v\n%s", err, errOut)
		}
		if !json {
			t.Logf("natlab check %s\n%s", strings.Join(args, " "), out)
			for _, w := range []string{"translation      NAT64", "NAT64 prefix     2001:db8:64::/96", "NAT type         port-restricted-cone", "NAT depth        3"} {
				if !strings.Contains(out.String(), w) {
					t.Errorf("text lacks %q:\n%s", w, out)
				}
			}
			continue
		}
		var doc checkDocument
		if err := decodeStrict(out.Bytes(), &doc); err != nil {
			t.Fatal(err)
		}
		p := doc.Profile
		if p == nil || p.Translation != natclass.TranslationNAT64 || p.NAT64Prefix != testnet.NAT64Prefix.String() ||
			!strings.HasPrefix(p.MappedAddress, site.Public.String()+":") || p.Mapping != natclass.EndpointIndependent ||
			p.Filtering != natclass.AddressAndPortDependent || p.NATDepth == nil || *p.NATDepth != 3 || slices.Contains(p.Hints, natclass.HintDoubleNAT) {
			// Depth 3: the router's IPv6 forwarding, tayga, and the
			// router's IPv4 NAT (the hop trace through the NAT64).
			t.Errorf("profile through NAT64: %+v", p)
		}
	}
}
