package metrics

import (
	"io"
	"net"
	"net/http"
	"net/netip"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v3"
	"github.com/pion/transport/v4/stdnet"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/probe"
	"github.com/natlab/natlab/rendezvous"
	"github.com/natlab/natlab/server"
)

// scrape GETs url and returns the exposition text.
func scrape(t *testing.T, url string) string {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %d %v", url, resp.StatusCode, err)
	}
	return string(b)
}

// value is the sample of an unlabelled metric in an exposition, or -1.
func value(text, name string) float64 {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(text)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// TestServerCollectorScrape runs a real STUN server on loopback, scrapes
// it over HTTP, sends one Binding request and scrapes again: the
// counters are read at scrape time.
func TestServerCollectorScrape(t *testing.T) {
	n, err := stdnet.NewNet()
	if err != nil {
		t.Fatal(err)
	}
	rz := rendezvous.NewRegistry(nil)
	srv, err := server.Listen(n, server.Config{Addrs: server.Addrs{Primary: netip.MustParseAddrPort("127.0.0.1:0")}, Rendezvous: rz})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	reg := NewRegistry()
	reg.MustRegister(NewServerCollector(ServerSources{STUN: srv.Stats, Rendezvous: rz.Stats,
		Relay: func() (RelayStats, bool) { return RelayStats{Allocations: 2, AllocationsTotal: 5}, true }}))
	ms, err := Listen("127.0.0.1:0", reg)
	if err != nil {
		t.Fatal(err)
	}
	defer ms.Close()

	before := scrape(t, ms.URL())
	for _, name := range []string{"natlab_stun_requests_total", "natlab_stun_responses_total", "natlab_stun_errors_total",
		"natlab_rendezvous_pairings", "natlab_rendezvous_paired_total", "natlab_turn_allocations", "go_goroutines"} {
		if value(before, name) < 0 {
			t.Errorf("%s missing from\n%s", name, before)
		}
	}
	if v := value(before, "natlab_turn_allocations_total"); v != 5 {
		t.Errorf("natlab_turn_allocations_total = %v, want the hook's 5", v)
	}

	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	if _, err := c.WriteTo(req.Raw, net.UDPAddrFromAddrPort(srv.Addrs().Primary)); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 1500)
	if _, _, err := c.ReadFrom(buf); err != nil {
		t.Fatalf("no STUN answer: %v", err)
	}
	after := scrape(t, ms.URL())
	for _, name := range []string{"natlab_stun_requests_total", "natlab_stun_responses_total"} {
		if b, a := value(before, name), value(after, name); a != b+1 {
			t.Errorf("%s: %v before, %v after one Binding request; want +1", name, b, a)
		}
	}
}

// TestServerCollectorNoRelay: without TURN no natlab_turn_* series is
// exported (rather than zeros that look like an idle relay).
func TestServerCollectorNoRelay(t *testing.T) {
	c := NewServerCollector(ServerSources{STUN: func() server.Stats { return server.Stats{Requests: 3} },
		Relay: func() (RelayStats, bool) { return RelayStats{}, false }})
	if n := testutil.CollectAndCount(c, "natlab_turn_allocations"); n != 0 {
		t.Errorf("%d TURN series without a relay", n)
	}
	if err := testutil.CollectAndCompare(c, strings.NewReader(`
# HELP natlab_stun_requests_total STUN requests received (UDP and TCP).
# TYPE natlab_stun_requests_total counter
natlab_stun_requests_total 3
`), "natlab_stun_requests_total"); err != nil {
		t.Error(err)
	}
	if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

func TestProbeMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	p := NewProbe(reg)
	rep := &probe.Report{
		Self: &natclass.Profile{NATType: natclass.PortRestrictedCone, Mapping: natclass.EndpointIndependent, Filtering: natclass.AddressAndPortDependent},
		Peer: natclass.Summary{NATType: natclass.Symmetric, Mapping: natclass.AddressAndPortDependent, Filtering: natclass.AddressAndPortDependent},
		Techniques: []probe.TechniqueResult{
			{Technique: natclass.DirectUDP, Measured: natclass.Fail},
			{Technique: natclass.Birthday, Measured: natclass.Success, TimeToFirstPacketMillis: 420, RTTMillis: 12},
			{Technique: "relay-udp", Measured: natclass.Success, RTTMillis: 30},
		},
		Verdict:        probe.Verdict{Direct: true, Technique: natclass.Birthday},
		DurationMillis: 2500,
	}
	p.Observe(rep)
	p.ObserveError()
	for _, c := range []struct {
		c    prometheus.Collector
		want float64
	}{
		{p.rounds.WithLabelValues("direct"), 1},
		{p.rounds.WithLabelValues("error"), 1},
		{p.rounds.WithLabelValues("relay"), 0},
		{p.direct.WithLabelValues("udp-birthday"), 1},
		{p.direct.WithLabelValues("udp"), 0},
		{p.directRTT, 0.012},
		{p.relayRTT.WithLabelValues("relay-udp"), 0.030},
		{p.nat.WithLabelValues("self", "port-restricted-cone", "endpoint-independent", "address-and-port-dependent"), 1},
		{p.outcomes.WithLabelValues("udp", "fail"), 1},
	} {
		if got := testutil.ToFloat64(c.c); got != c.want {
			t.Errorf("%v = %v, want %v", c.c, got, c.want)
		}
	}
	if n := testutil.CollectAndCount(p.timeToDirect); n != 1 {
		t.Errorf("time to direct: %d series", n)
	}
	// A new round with another peer replaces the info series.
	rep.Peer.NATType = natclass.FullCone
	p.Observe(rep)
	if n := testutil.CollectAndCount(p.nat); n != 2 {
		t.Errorf("natlab_probe_nat_info has %d series after a second round, want 2 (self, peer)", n)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

// TestLimitMetrics: drops by the per-source limits show in
// natlab_rate_limited_total by kind.
func TestLimitMetrics(t *testing.T) {
	n, err := stdnet.NewNet()
	if err != nil {
		t.Fatal(err)
	}
	rz := rendezvous.NewRegistry(nil)
	srv, err := server.Listen(n, server.Config{Addrs: server.Addrs{Primary: netip.MustParseAddrPort("127.0.0.1:0")}, Rendezvous: rz,
		Limits: server.Limits{BindingRate: 0.001, BindingBurst: 2}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	reg := NewRegistry()
	reg.MustRegister(NewServerCollector(ServerSources{STUN: srv.Stats, Rendezvous: rz.Stats, Limits: srv.LimitStats}))
	ms, err := Listen("127.0.0.1:0", reg)
	if err != nil {
		t.Fatal(err)
	}
	defer ms.Close()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for range 5 {
		_, _ = c.WriteTo(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw, net.UDPAddrFromAddrPort(srv.Addrs().Primary))
	}
	want := `natlab_rate_limited_total{kind="binding"} 3`
	deadline := time.Now().Add(5 * time.Second)
	for {
		text := scrape(t, ms.URL())
		if strings.Contains(text, want) && strings.Contains(text, `natlab_rate_limited_total{kind="rendezvous"} 0`) &&
			value(text, "natlab_conns_refused_total") == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("want %s in\n%s", want, text)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSummaryLabelsRoundTrip: a summary exported as labels reads back
// equal, its nested TCP profile included (the public addresses are not
// exported).
func TestSummaryLabelsRoundTrip(t *testing.T) {
	in := natclass.Summary{NATType: natclass.Symmetric, Mapping: natclass.AddressAndPortDependent, Filtering: natclass.AddressAndPortDependent,
		Allocation: natclass.Sequential, Step: 2, TCP: true, PortMapping: true,
		TCPProfile: &natclass.TCPSummary{Reached: natclass.Yes, Mapping: natclass.EndpointIndependent, Filtering: natclass.AddressAndPortDependent}}
	labels := map[string]string{}
	for i, name := range SummaryLabels() {
		labels[name] = summaryValues(in)[i]
	}
	out, err := SummaryFromLabels(labels)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Errorf("read back %+v (TCP %+v), want %+v (TCP %+v)", out, out.TCPProfile, in, in.TCPProfile)
	}
	if _, err := SummaryFromLabels(map[string]string{"tcp": "maybe"}); err == nil {
		t.Error("a bad bool label was accepted")
	}
}
