package cmd

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/natlab/natlab/internal/labtest"
	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/probe"
	"github.com/natlab/natlab/rendezvous"
	"github.com/natlab/natlab/testnet"
)

// `natlab probe` on an IPv6-only host of the kernel lab (tayga NAT64,
// unbound DNS64) against a probe on a dual-stack host: the IPv4 server
// has no route, so the probe learns the NAT64 prefix through --dns64,
// profiles and pairs through the synthesised address and punches
// through the NAT64 (--json; its text view). Without a DNS64 there is no
// path: one line, exit 4.
func TestProbeThroughNAT64Cmd(t *testing.T) {
	topo, err := testnet.IPv6Topology("nat64", "ipv6-firewall")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tl := labtest.Kernel(t, ctx, topo)
	labtest.Servers(t, tl)
	six, dual := tl.Sites[0], tl.Sites[1]
	server := labtest.Server(tl)
	run := func(args ...string) (string, string, error) {
		s, out, errOut := testStreams()
		c := NewCmdProbe(s, func(ctx context.Context, o *ProbeOptions) error {
			o.Net = six.Host.Net
			return runProbe(ctx, o)
		})
		c.SetArgs(append([]string{"--server", server}, args...))
		c.SetOut(s.Out)
		c.SetErr(s.ErrOut)
		err := c.ExecuteContext(ctx)
		return out.String(), errOut.String(), err
	}
	code, err := rendezvous.NewCode()
	if err != nil {
		t.Fatal(err)
	}
	var peerErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		_, peerErr = probe.Run(ctx, probe.Options{Net: dual.Host.Net, NoPortMap: true, Mode: rendezvous.Meet, Code: code, Server: server})
	})
	args := []string{"--code", code, "--dns64", six.DNS64.String(), "--json"}
	out, errOut, err := run(args...)
	wg.Wait()
	if err != nil || peerErr != nil {
		t.Fatalf("probe %v: %v (peer: %v)\n%s%s", args, err, peerErr, out, errOut)
	}
	var rep probe.Report
	if err := decodeStrict([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	if p := rep.Self; p == nil || p.Translation != natclass.TranslationNAT64 || p.NAT64Prefix != testnet.NAT64Prefix.String() ||
		!strings.HasPrefix(p.MappedAddress, six.Public.String()+":") || !rep.Verdict.Direct {
		t.Errorf("report through NAT64: self %+v, verdict %+v", rep.Self, rep.Verdict)
	}
	// The text view of the same report (one pairing only: a second one
	// right after would find the routers' ICMP budget spent by this one's
	// opening packets, and its path trace short).
	var text strings.Builder
	if err := writeProbeReport(&text, &rep); err != nil {
		t.Fatal(err)
	}
	t.Logf("natlab probe %s\n%s", strings.Join(args[:len(args)-1], " "), text.String())
	for _, w := range []string{"Direct P2P works", "NAT64 (prefix " + testnet.NAT64Prefix.String(), "this host is IPv6-only: its IPv4 goes through NAT64 " + testnet.NAT64Prefix.String()} {
		if !strings.Contains(text.String(), w) {
			t.Errorf("text lacks %q", w)
		}
	}
	// A resolver that is no DNS64 (nothing listens on the server's port
	// 53): no NAT64, so no path to the server.
	_, errOut, err = run("--code", "nat6-4nat-64na-t64n", "--dns64", netip.AddrPortFrom(tl.Server.Addrs6[0], 53).String())
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Code != ExitNoPath || !errors.Is(err, probe.ErrNoPath) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("without a NAT64: %v (%T), want one line and exit %d\n%s", err, err, ExitNoPath, errOut)
	}
	t.Logf("without a NAT64: %v", err)
}
