package portmap

import (
	"bufio"
	"net/netip"
	"strings"
	"testing"
)

func TestParseRoutes(t *testing.T) {
	const table = `Iface	Destination	Gateway 	Flags	RefCnt	Use	Metric	Mask		MTU	Window	IRTT
eth0	0000000A	00000000	0001	0	0	0	00FFFFFF	0	0	0
eth0	00000000	0100000A	0003	0	0	0	00000000	0	0	0
`
	gw, err := parseRoutes(bufio.NewScanner(strings.NewReader(table)))
	if err != nil || gw != netip.MustParseAddr("10.0.0.1") {
		t.Errorf("parseRoutes = %v, %v; want 10.0.0.1", gw, err)
	}
	if _, err := parseRoutes(bufio.NewScanner(strings.NewReader(strings.SplitAfterN(table, "\n", 3)[0]))); err == nil {
		t.Errorf("no default route: want an error")
	}
}

func TestLeavesAndFault(t *testing.T) {
	const fault = `<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault>
<faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail><UPnPError xmlns="urn:schemas-upnp-org:control-1-0">
<errorCode>718</errorCode><errorDescription>ConflictInMappingEntry</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>`
	out, err := leaves(strings.NewReader(fault))
	if err != nil || out["errorCode"] != "718" || out["errorDescription"] != "ConflictInMappingEntry" {
		t.Errorf("leaves = %v, %v", out, err)
	}
}

func TestFindServicePrefersIPConnection(t *testing.T) {
	d := device{Devices: []device{{
		Services: []service{{ServiceType: "urn:schemas-upnp-org:service:WANPPPConnection:1", ControlURL: "/ppp"}},
		Devices: []device{{Services: []service{
			{ServiceType: "urn:schemas-upnp-org:service:WANIPConnection:2", ControlURL: "/ip"},
		}}},
	}}}
	s, ok := d.findService()
	if !ok || s.ControlURL != "/ip" {
		t.Errorf("findService = %+v, %v; want the WANIPConnection", s, ok)
	}
	if _, ok := (device{}).findService(); ok {
		t.Errorf("empty device: found a service")
	}
}

func TestReportSummary(t *testing.T) {
	r := Report{Protocols: []Result{{Protocol: PCP}, {Protocol: NATPMP, Available: true}, {Protocol: UPnP, Available: true}}}
	if got := r.Summary(); got != "nat-pmp, upnp-igd" || !r.Any() {
		t.Errorf("Summary = %q", got)
	}
	if got := (Report{}).Summary(); got != "none" {
		t.Errorf("empty Summary = %q", got)
	}
}
