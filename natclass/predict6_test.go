package natclass_test

import (
	"testing"

	"github.com/natlab/natlab/natclass"
)

// v6 is an IPv6 summary as a host measures it behind an IPv6 router:
// no NAT (a firewall or nothing) or NAT66/NPTv6, at address mapped.
func v6(nat bool, m, f natclass.Behavior, a natclass.Allocation, mapped string) natclass.Summary {
	return natclass.Summary{NATType: natclass.ClassicName(nat, m, f), Mapping: m, Filtering: f, Allocation: a, TCP: true,
		TCPProfile: tcpSum(m, f, a), Mapped: mapped}
}

// TestPredictIPv6 is the IPv6 plan's predictions: natclass.Predict on the
// two measured IPv6 summaries, whatever the routers are called (the lab's
// IPv6 presets produce these summaries: nat66-random,
// ipv6-firewall-udp-eif, ipv6-tcp-only; a firewall without TCP is not
// one). A
// stateful firewall without NAT measures EIM/APDF, so two of them punch
// (simultaneous sends open both); a router measured otherwise is
// predicted otherwise; port mapping is never in an IPv6 summary.
func TestPredictIPv6(t *testing.T) {
	var (
		firewall = v6(false, ei, apd, natclass.Preserving, "[2001:db8:200::5054:ff:fe00:2]:40000")
		open     = v6(false, ei, ei, natclass.Preserving, "[2001:db8:200:1:5054:ff:fe00:2]:40000")
		nat66    = v6(true, ei, apd, natclass.Preserving, "[2001:db8:100:3::2]:40000")
		nptv6    = v6(true, ei, apd, natclass.Preserving, "[2001:db8:200:4:5054:ff:fe00:2]:40000")
		// A NAT66 measured with a random port per destination (nft
		// masquerade random-fully), and a firewall that drops TCP.
		nat66Random   = v6(true, apd, apd, natclass.Random, "[2001:db8:100:5::2]:40000")
		firewallNoTCP = withTCP(firewall, &natclass.TCPSummary{Reached: natclass.No})
		// A corporate firewall passing TCP only (ipv6-tcp-only).
		tcpOnly = natclass.Summary{NATType: natclass.UDPBlocked, TCP: true, TCPProfile: tcpSum(ei, apd, natclass.Preserving)}
		// RFC 6092 REC-17: UDP pinholes (EIF), TCP replies only (APDF).
		firewallUDPEIF = withTCP(v6(false, ei, ei, natclass.Preserving, "[2001:db8:200:7:5054:ff:fe00:2]:40000"), tcpSum(ei, apd, natclass.Preserving))
		sameNAT66      = v6(true, ei, apd, natclass.Preserving, "[2001:db8:100:3::2]:41000")
		S, F, X, U     = natclass.Success, natclass.Fail, natclass.Skipped, natclass.UnknownOutcome
		firewallTCPOff = withTCP(firewall, nil)
		// The same kind of router at another site: another address.
		firewall2    = at(firewall, "[2001:db8:200:2:5054:ff:fe00:2]:40000")
		open2        = at(open, "[2001:db8:200:3:5054:ff:fe00:2]:40000")
		nat66Random2 = at(nat66Random, "[2001:db8:100:6::2]:40000")
	)
	for _, c := range []struct {
		name string
		a, b natclass.Summary
		// same-lan, udp, udp-predict, udp-birthday, udp-portmap, tcp
		want [6]natclass.Outcome
	}{
		{"firewall × firewall", firewall, firewall2, [6]natclass.Outcome{X, S, X, X, X, S}},
		{"open × firewall", open, firewall, [6]natclass.Outcome{X, S, X, X, X, S}},
		{"nat66 × nptv6", nat66, nptv6, [6]natclass.Outcome{X, S, X, X, X, S}},
		{"open × open", open, open2, [6]natclass.Outcome{X, S, X, X, X, S}},
		{"random nat66 × firewall", nat66Random, firewall, [6]natclass.Outcome{X, F, X, S, X, F}},
		{"random nat66 × open", nat66Random, open, [6]natclass.Outcome{X, S, X, S, X, S}},
		{"random nat66 × random nat66", nat66Random, nat66Random2, [6]natclass.Outcome{X, F, X, F, X, F}},
		{"firewall without TCP × open", firewallNoTCP, open, [6]natclass.Outcome{X, S, X, X, X, F}},
		// The pinholes admit the random NAT66's new UDP mapping; its TCP
		// meets conntrack's port filter.
		{"UDP-EIF firewall × random nat66", firewallUDPEIF, nat66Random, [6]natclass.Outcome{X, S, X, S, X, F}},
		{"UDP-EIF firewall × firewall", firewallUDPEIF, firewall, [6]natclass.Outcome{X, S, X, X, X, S}},
		// Without UDP every UDP technique fails; TCP follows the TCP
		// profiles.
		{"TCP-only firewall × firewall", tcpOnly, firewall, [6]natclass.Outcome{X, F, F, F, F, S}},
		{"TCP-only firewall × random nat66", tcpOnly, nat66Random, [6]natclass.Outcome{X, F, F, F, F, F}},
		{"firewall, TCP not measured × firewall", firewallTCPOff, firewall2, [6]natclass.Outcome{X, S, X, X, X, U}},
		{"two hosts behind one NAT66", nat66, sameNAT66, [6]natclass.Outcome{S, S, X, X, X, S}},
	} {
		for _, order := range [][2]natclass.Summary{{c.a, c.b}, {c.b, c.a}} {
			ps := natclass.Predict(order[0], order[1])
			if len(ps) != len(c.want) {
				t.Fatalf("%s: %d predictions", c.name, len(ps))
			}
			for i, p := range ps {
				if p.Outcome != c.want[i] {
					t.Errorf("%s: %s predicted %s (%s), want %s", c.name, p.Technique, p.Outcome, p.Reason, c.want[i])
				}
			}
		}
	}
}

// at is s measured at another public address.
func at(s natclass.Summary, mapped string) natclass.Summary {
	s.Mapped = mapped
	return s
}
