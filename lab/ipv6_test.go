package lab_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/natlab/natlab/lab"
	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/testnet"
)

// TestLabIPv6 builds every IPv6 preset on the kernel lab (one dual-stack
// site each, all in one lab) and checks both families: the IPv4 side still
// equals its preset, and the IPv6 profile equals the IPv6 preset —
// filtering, nat_type, port allocation, the translation detected and the
// address the server saw.
// The shared segment (routers and server on one /64, no router between)
// must give the same profiles.
func TestLabIPv6(t *testing.T) {
	for _, seg := range testnet.Segments() {
		t.Run(string(seg), func(t *testing.T) { testLabIPv6(t, seg) })
	}
}

func testLabIPv6(t *testing.T, seg testnet.Segment) {
	topo, err := testnet.IPv6Topology()
	if err != nil {
		t.Fatal(err)
	}
	topo.Segment = seg
	ctx, cancel := context.WithTimeout(context.Background(), labBound)
	defer cancel()
	rep, err := lab.Run(ctx, lab.Options{Backend: testnet.Kernel, Topology: topo})
	if errors.Is(err, testnet.ErrNeedPrivileges) {
		t.Skipf("kernel lab: %v", err)
	}
	if err != nil {
		t.Fatalf("lab.Run: %v", err)
	}
	if rep.Topology != string(seg) {
		t.Errorf("report topology %q, want %q", rep.Topology, seg)
	}
	if len(rep.Sites) != len(testnet.IPv6Presets()) {
		t.Fatalf("%d sites, want one per IPv6 preset", len(rep.Sites))
	}
	for _, s := range rep.Sites {
		if s.Error != "" || s.IPv6Error != "" {
			t.Errorf("site %s (%s): %s %s", s.Name, s.IPv6Preset, s.Error, s.IPv6Error)
			continue
		}
		for _, m := range s.Mismatches {
			t.Errorf("site %s (%s): %s", s.Name, s.IPv6Preset, m)
		}
		if s.IPv6Preset == "nat64" {
			// IPv6-only: no IPv4 check; the IPv6 one went through the
			// NAT64 whose prefix DNS64 gave (RFC 7050) to the IPv4 server.
			if s.Profile != nil || s.IPv6 == nil || s.IPv6.NAT64Prefix != testnet.NAT64Prefix.String() ||
				!strings.HasPrefix(s.IPv6.Server, "203.0.113.10:") || s.IPv6.MappedAddress == "" {
				t.Errorf("nat64 site %s: %+v / %+v", s.Name, s.Profile, s.IPv6)
			}
			continue
		}
		if s.IPv6 == nil || s.IPv6.Family != "ipv6" || s.Profile == nil || s.Profile.Family != "ipv4" {
			t.Errorf("site %s: profiles %+v / %+v", s.Name, s.Profile, s.IPv6)
		}
	}
	if !rep.Match {
		t.Error("report says mismatch")
	}
}

// The in-process backend has no IPv6: it says so.
func TestLabIPv6InProcess(t *testing.T) {
	topo, err := testnet.IPv6Topology("nat66")
	if err != nil {
		t.Fatal(err)
	}
	_, err = lab.Run(context.Background(), lab.Options{Backend: testnet.InProcess, Topology: topo})
	if !errors.Is(err, testnet.ErrNotSupported) || !strings.Contains(err.Error(), "IPv6") {
		t.Errorf("in-process IPv6 lab: %v", err)
	}
}

// TestCompare6: a wrong translation, filtering, TCP behaviour or address
// is a mismatch in words.
func TestCompare6(t *testing.T) {
	n, err := testnet.Preset6("nptv6")
	if err != nil {
		t.Fatal(err)
	}
	e := n.Expect()
	p := &natclass.Profile{Family: "ipv6", NATType: e.NATType, Mapping: e.Mapping, Filtering: e.Filtering,
		PortAllocation: &natclass.PortAllocation{Pattern: natclass.Preserving}, Translation: natclass.TranslationNPTv6,
		MappedAddress: "[2001:db8:200:1:5054:ff:fe00:2]:4000",
		TCP: &natclass.TCPProfile{Reached: natclass.Yes, Mapping: e.TCP.Mapping, Filtering: e.TCP.Filtering,
			PortAllocation: &natclass.PortAllocation{Pattern: natclass.Preserving}}}
	if m := lab.Compare6(e, "2001:db8:200:1:5054:ff:fe00:2", p); len(m) != 0 {
		t.Errorf("matching profile: %v", m)
	}
	p.Translation, p.Filtering = natclass.TranslationNAT66, natclass.EndpointIndependent
	p.TCP.Mapping = natclass.AddressAndPortDependent
	m := lab.Compare6(e, "2001:db8:200:1:5054:ff:fe00:3", p)
	if len(m) != 4 || !strings.Contains(strings.Join(m, "|"), "ipv6 translation: want nptv6, measured nat66") ||
		!strings.Contains(strings.Join(m, "|"), "ipv6 tcp mapping: want endpoint-independent, measured address-and-port-dependent") {
		t.Errorf("mismatches %q", m)
	}
	// An IPv6 check without its TCP profile is a mismatch too.
	p.TCP = nil
	if m := lab.Compare6(e, "2001:db8:200:1:5054:ff:fe00:2", p); !strings.Contains(strings.Join(m, "|"), "ipv6 tcp: want a measured TCP profile") {
		t.Errorf("no TCP: %q", m)
	}
}
