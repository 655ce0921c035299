package cmd

import (
	"strings"
	"testing"

	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/testnet"
)

// `natlab lab presets` lists the IPv6 presets beside the IPv4 ones: in
// --json as ipv6_presets (strict decode), in text as a second table and
// a line per router saying what it does.
func TestLabPresetsIPv6(t *testing.T) {
	s, out, errOut := testStreams()
	if code := Main([]string{"lab", "presets", "--json"}, s); code != ExitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var doc labPresetsDocument
	if err := decodeStrict(out.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Schema != LabPresetsSchema || len(doc.Presets) != len(testnet.Presets()) || len(doc.IPv6Presets) != len(testnet.IPv6Presets()) {
		t.Fatalf("document: %s, %d IPv4 presets, %d IPv6", doc.Schema, len(doc.Presets), len(doc.IPv6Presets))
	}
	ei, apd := natclass.EndpointIndependent, natclass.AddressAndPortDependent
	want := map[string]struct {
		translation string
		natType     natclass.NATType
		firewall    bool
		// the TCP profile over IPv6: mapping, filtering
		tcp [2]natclass.Behavior
	}{
		"ipv6-firewall":         {natclass.TranslationNone, natclass.SymmetricFirewall, true, [2]natclass.Behavior{ei, apd}},
		"ipv6-firewall-udp-eif": {natclass.TranslationNone, natclass.Open, true, [2]natclass.Behavior{ei, apd}},
		"ipv6-open":             {natclass.TranslationNone, natclass.Open, false, [2]natclass.Behavior{ei, ei}},
		"ipv6-tcp-only":         {natclass.TranslationNone, natclass.UDPBlocked, true, [2]natclass.Behavior{ei, apd}},
		"nat66":                 {natclass.TranslationNAT66, natclass.PortRestrictedCone, true, [2]natclass.Behavior{ei, apd}},
		"nat66-random":          {natclass.TranslationNAT66, natclass.Symmetric, true, [2]natclass.Behavior{apd, apd}},
		"nptv6":                 {natclass.TranslationNPTv6, natclass.PortRestrictedCone, true, [2]natclass.Behavior{ei, apd}},
		"nat64":                 {natclass.TranslationNAT64, natclass.PortRestrictedCone, true, [2]natclass.Behavior{ei, apd}},
	}
	routers := map[string]bool{}
	for _, p := range doc.IPv6Presets {
		w, ok := want[p.Name]
		if !ok || p.IPv6.Translation != w.translation || p.Expected.Translation != w.translation || p.IPv6.Firewall != w.firewall ||
			p.Expected.NATType != w.natType || p.IPv4Preset != "port-restricted-cone" || p.Router == "" || routers[p.Router] ||
			[2]natclass.Behavior{p.Expected.TCP.Mapping, p.Expected.TCP.Filtering} != w.tcp {
			t.Errorf("IPv6 preset %+v, want %+v", p, w)
		}
		routers[p.Router] = true
	}
	s, out, _ = testStreams()
	if code := Main([]string{"lab", "presets"}, s); code != ExitOK {
		t.Fatalf("text: exit %d", code)
	}
	for _, line := range []string{
		"\nIPv6 (natlab lab --kernel --ipv6; each site is port-restricted-cone for IPv4)\npreset                 nat_type",
		"\nipv6-firewall          symmetric-firewall    none         endpoint-independent        address-and-port-dependent  preserving  EIM APDF preserving\n",
		"\nipv6-firewall-udp-eif  open                  none         endpoint-independent        endpoint-independent        preserving  EIM APDF preserving\n",
		"\nnat66-random           symmetric             nat66        address-and-port-dependent  address-and-port-dependent  random      APDM APDF random\n",
		"\nnat66                  NAT66 masquerade (nft masquerade)",
	} {
		if !strings.Contains(out.String(), line) {
			t.Errorf("text lacks %q:\n%s", line, out)
		}
	}
}
