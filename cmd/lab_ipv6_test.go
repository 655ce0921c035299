package cmd

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/natlab/natlab/lab"
	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/probe"
	"github.com/natlab/natlab/testnet"
)

func TestLabIPv6Flags(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"lab", "--ipv6"}, "--ipv6 needs --kernel"},
		{[]string{"lab", "--ipv6", "--matrix"}, "--ipv6 needs --kernel"},
		{[]string{"lab", "--kernel", "--ipv6", "--matrix", "--nat-b", "symmetric"}, "--nat-b with --ipv6 names an IPv6 preset"},
		{[]string{"probe", "--server", "203.0.113.10:3478", "--server6", "2001:db8::1"}, "--server6"},
		{[]string{"lab", "--kernel", "--ipv6", "--nat-a", "symmetric"}, "--nat-a with --ipv6 names an IPv6 preset"},
		{[]string{"lab", "--kernel", "--ipv6", "--delay", "10ms"}, "--delay and --loss shape the IPv4 two-site lab"},
	} {
		s, _, errOut := testStreams()
		if code := Main(c.args, s); code != ExitUsage || !strings.Contains(errOut.String(), c.want) {
			t.Errorf("%v: exit %d, stderr %q, want %q", c.args, code, errOut, c.want)
		}
	}
}

// `--kernel --ipv6 --matrix` is the IPv6 matrix: the flags reach the run
// function as such, over every IPv6 preset, or over the IPv6 presets
// --nat-a/--nat-b name.
func TestLabIPv6MatrixFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"--kernel", "--ipv6", "--matrix", "--json"}, nil},
		{[]string{"--kernel", "--ipv6", "--matrix", "--nat-a", "nat64", "--nat-b", "nat66-random"}, []string{"nat64", "nat66-random"}},
		{[]string{"--kernel", "--ipv6", "--matrix", "--nat-b", "nptv6"}, []string{"nptv6"}},
		{[]string{"--kernel", "--ipv6", "--nat-a", "nat66", "--nat-b", "nat66"}, []string{"nat66"}},
	} {
		s, _, _ := testStreams()
		var got *LabOptions
		c2 := NewCmdLab(s, func(_ context.Context, o *LabOptions) error { got = o; return nil })
		c2.SetArgs(c.args)
		if err := c2.Execute(); err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		matrix := slices.Contains(c.args, "--matrix")
		if got == nil || !got.IPv6 || got.Matrix != matrix || !got.Kernel || !slices.Equal(got.IPv6Presets, c.want) ||
			(matrix && !slices.Equal(got.MatrixPresets, c.want)) {
			t.Errorf("%v: options %+v", c.args, got)
		}
	}
}

// `natlab lab --kernel --ipv6 --json`: one natlab.lab/v1 document whose
// sites carry their IPv6 preset, expectation and profile, all matching;
// the text view shows the IPv6 table.
func TestLabIPv6Command(t *testing.T) {
	s, out, errOut := testStreams()
	code := Main([]string{"lab", "--kernel", "--ipv6", "--json"}, s)
	if strings.Contains(errOut.String(), testnet.ErrNeedPrivileges.Error()) {
		t.Skipf("kernel lab: %s", errOut)
	}
	if code != ExitOK {
		t.Fatalf("exit %d: %s\n%s", code, errOut, out)
	}
	var rep lab.Report
	if err := decodeStrict(out.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	if !rep.Match || len(rep.Sites) != len(testnet.IPv6Presets()) {
		t.Fatalf("report %+v", rep)
	}
	for _, site := range rep.Sites {
		if site.IPv6 == nil || site.ExpectedIPv6 == nil || site.IPv6.Translation != site.ExpectedIPv6.Translation {
			t.Errorf("site %s: %+v", site.Name, site)
		}
	}
	if !strings.Contains(strings.Join(rep.Server, " "), "[2001:db8:10::10]:3478") {
		t.Errorf("server %v lacks the IPv6 sockets", rep.Server)
	}
	// The text view, on the shared segment: the NAT66 router (site f)
	// has its WAN address on the server's /64; nat66-random's TCP over
	// IPv6 is listed under the tables, and ipv6-tcp-only's (its UDP is
	// blocked) with the address the server saw over TCP.
	s, out, _ = testStreams()
	if code := Main([]string{"lab", "--kernel", "--ipv6", "--topology", "shared"}, s); code != ExitOK || !strings.Contains(out.String(), "\nIPv6\nsite  ipv6 preset") ||
		!strings.Contains(out.String(), "nptv6                  port-restricted-cone  nptv6") ||
		!strings.Contains(out.String(), "\nf     nat66                  port-restricted-cone  nat66        EIM      APDF       preserving  [2001:db8:10::105]:") ||
		!strings.Contains(out.String(), "\n  site g: IPv6 TCP APDM APDF random\n") || strings.Contains(out.String(), "site e: error") ||
		!strings.Contains(out.String(), "\nd     ipv6-tcp-only          udp-blocked           none         -        -          -           -  ") ||
		!strings.Contains(out.String(), "\n  site d: IPv6 TCP EIM APDF preserving, mapped address\n          [2001:db8:200:3:5054:ff:fe00:2]:") {
		t.Errorf("exit %d, text:\n%s", code, out)
	}
}

func TestWriteIPv6Stage(t *testing.T) {
	var b strings.Builder
	if err := writeIPv6Stage(&b, &probe.FamilyResult{Measured: natclass.Success, TimeToFirstPacketMillis: 75, RTTMillis: 0.3, Remote: "[2001:db8:100:1::2]:54556"}); err != nil {
		t.Fatal(err)
	}
	if got := b.String(); got != "\nudp over IPv6: success, first packet 75.0 ms, rtt 0.30 ms, peer\n[2001:db8:100:1::2]:54556\n" {
		t.Errorf("got %q", got)
	}
	b.Reset()
	_ = writeIPv6Stage(&b, nil)
	if b.Len() != 0 {
		t.Errorf("no IPv6 stage printed %q", b.String())
	}
	// With the IPv6 plan: both profiles, then a row per technique.
	fr := &probe.FamilyResult{
		Self: &natclass.Profile{NATType: natclass.SymmetricFirewall, Mapping: natclass.EndpointIndependent, Filtering: natclass.AddressAndPortDependent,
			MappedAddress: "[2001:db8:200:0:5054:ff:fe00:2]:56214", Translation: natclass.TranslationNone},
		Peer: &natclass.Summary{NATType: natclass.PortRestrictedCone, Mapping: natclass.EndpointIndependent, Filtering: natclass.AddressAndPortDependent, Mapped: "[2001:db8:100:3::2]:51848"},
		Techniques: []probe.TechniqueResult{
			{Technique: natclass.DirectUDP, Predicted: natclass.Success, Measured: natclass.Success, Attempts: 3, TimeToFirstPacketMillis: 75, RTTMillis: 0.3, Reason: "both mappings are endpoint-independent"},
			{Technique: natclass.MappedUDP, Predicted: natclass.Skipped, Measured: natclass.Skipped, Reason: "port mapping is asked over IPv4 only"},
		},
	}
	b.Reset()
	if err := writeIPv6Stage(&b, fr); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"\nIPv6\nthis host  symmetric-firewall    EIM APDF, TCP not measured\npeer       port-restricted-cone  EIM APDF, TCP not measured\n",
		"  this host mapped [2001:db8:200:0:5054:ff:fe00:2]:56214 (translation none)\n  peer mapped [2001:db8:100:3::2]:51848\n",
		"\nudp          success    success   3      75.0 ms       0.30 ms\n    both mappings are endpoint-independent\n",
		"udp-portmap  skipped    skipped   0      -             -\n    port mapping is asked over IPv4 only\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("IPv6 rows lack %q:\n%s", want, b.String())
		}
	}
	for _, l := range strings.Split(b.String(), "\n") {
		if len([]rune(l)) > textWidth {
			t.Errorf("line over %d columns: %q", textWidth, l)
		}
	}
	b.Reset()
	_ = writeIPv6Stage(&b, nil)
	if b.Len() != 0 {
		t.Errorf("no IPv6 stage printed %q", b.String())
	}
}

// `natlab lab --kernel --ipv6 --matrix --json`: one natlab.matrix/v1
// document over two IPv6 presets (NAT64 and a NAT66 with random ports:
// punching, birthday probing and relay-only cells; the whole grid is
// lab.TestMatrixIPv6's) whose cells carry their IPv6 rows
// (ipv6_techniques), every one predicted = measured; its text view shows
// both grids in 80 columns.
func TestLabIPv6MatrixCommand(t *testing.T) {
	s, out, errOut := testStreams()
	presets := []string{"nat64", "nat66-random"}
	code := Main([]string{"lab", "--kernel", "--ipv6", "--matrix", "--json", "--nat-a", presets[0], "--nat-b", presets[1]}, s)
	if strings.Contains(errOut.String(), testnet.ErrNeedPrivileges.Error()) {
		t.Skipf("kernel lab: %s", errOut)
	}
	if code != ExitOK {
		t.Fatalf("exit %d: %s\n%s", code, errOut, out)
	}
	var rep lab.MatrixReport
	if err := decodeStrict(out.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	n := len(presets)
	if !rep.Match || !rep.IPv6 || !slices.Equal(rep.Presets, presets) || len(rep.Pairs) != n*(n+1)/2 || len(rep.Excluded) != 0 {
		t.Fatalf("report: match %v, ipv6 %v, %d pairs, excluded %v", rep.Match, rep.IPv6, len(rep.Pairs), rep.Excluded)
	}
	for _, p := range rep.Pairs {
		if len(p.IPv6) == 0 || len(p.Techniques) == 0 {
			t.Errorf("%s × %s: %d IPv6 rows, %d IPv4 rows", p.A, p.B, len(p.IPv6), len(p.Techniques))
		}
	}
	var b strings.Builder
	if err := writeMatrix(&b, &rep); err != nil {
		t.Fatal(err)
	}
	text := b.String()
	for _, want := range []string{"\npresets (every site port-restricted-cone for IPv4):\n  A nat64\n  B nat66-random\n",
		"\nIPv6, what worked", "\nA udp+tcp  bday\nB bday     relay\n", "\nIPv4, what worked: udp+tcp in every pair\n",
		"the TURN relay worked in 3 of 3 pairs, over IPv6 in 3", "every measured outcome equals its prediction (3 pairs"} {
		if !strings.Contains(text, want) {
			t.Errorf("text lacks %q:\n%s", want, text)
		}
	}
	for _, l := range strings.Split(text, "\n") {
		if len([]rune(l)) > textWidth {
			t.Errorf("line over %d columns: %q", textWidth, l)
		}
	}
}
