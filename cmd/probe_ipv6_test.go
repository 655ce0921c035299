package cmd

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/natlab/natlab/internal/labtest"
	"github.com/natlab/natlab/lab"
	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/rendezvous"
	"github.com/natlab/natlab/testnet"
)

// TestProbeIPv6Events: two `natlab probe --server6 --events` on the hosts
// of a dual-stack kernel lab (IPv6 firewall × NAT66): the IPv6 plan's
// technique events carry "family": "ipv6" and decode strictly, the
// report's ipv6 has a row per technique, each predicted = measured, and
// its text view lists them.
func TestProbeIPv6Events(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	topo, err := testnet.IPv6Topology("ipv6-firewall", "nat66")
	if err != nil {
		t.Fatal(err)
	}
	tl := labtest.Kernel(t, ctx, topo)
	srvs := labtest.Servers(t, tl)
	code, err := rendezvous.NewCode()
	if err != nil {
		t.Fatal(err)
	}
	outs := [2]*syncBuffer{{}, {}}
	errs := make(chan error, 2)
	for site := range 2 {
		go func() {
			s := IOStreams{In: strings.NewReader(""), Out: outs[site], ErrOut: &syncBuffer{}}
			c := NewCmdProbe(s, func(ctx context.Context, o *ProbeOptions) error {
				o.Net = tl.Sites[site].Host.Net
				return runProbe(ctx, o)
			})
			c.SetArgs([]string{"--server", labtest.Server(tl),
				"--server6", lab.Server6(srvs), "--events", "--code", code})
			errs <- c.ExecuteContext(ctx)
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("natlab probe --server6: %v", err)
		}
	}
	for site, out := range outs {
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		six := 0
		for _, l := range lines[:len(lines)-1] {
			if e := checkEvent(t, []byte(l)); e.Family == "ipv6" && e.Outcome != "" {
				six++
			}
		}
		rep := checkReport(t, []byte(lines[len(lines)-1]))
		if rep.IPv6 == nil || len(rep.IPv6.Techniques) != len(natclass.Techniques) || six != len(natclass.Techniques) || rep.IPv6.Peer == nil {
			t.Fatalf("site %d: %d IPv6 outcome events, ipv6 %+v", site, six, rep.IPv6)
		}
		for _, tr := range rep.IPv6.Techniques {
			if tr.Predicted != tr.Measured {
				t.Errorf("site %d: ipv6 %s predicted %s (%s), measured %s (%s)", site, tr.Technique, tr.Predicted, tr.Reason, tr.Measured, tr.Error)
			}
		}
		if rep.Verdict.Family != "ipv6" || rep.IPv6.Technique != natclass.DirectUDP || rep.IPv6.Measured != natclass.Success {
			t.Errorf("site %d: verdict %+v, ipv6 %s %s", site, rep.Verdict, rep.IPv6.Technique, rep.IPv6.Measured)
		}
		var b strings.Builder
		if err := writeProbeReport(&b, rep); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(b.String(), "\nIPv6\nthis host  ") || strings.Count(b.String(), "\ntcp ") != 2 {
			t.Errorf("site %d: text:\n%s", site, b.String())
		}
	}
}
