package cmd

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v3"
	"github.com/pion/transport/v4/stdnet"

	"github.com/natlab/natlab/internal/buildinfo"
	"github.com/natlab/natlab/internal/interop"
	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/portmap"
	"github.com/natlab/natlab/server"
)

func testStreams() (IOStreams, *bytes.Buffer, *bytes.Buffer) {
	var out, errOut bytes.Buffer
	return IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}, &out, &errOut
}

// startServer runs the natlab STUN server on loopback for a test.
func startServer(t *testing.T, a server.Addrs) netip.AddrPort {
	t.Helper()
	n, err := stdnet.NewNet()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.Listen(n, server.Config{Addrs: a})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv.Addrs().Primary
}

func TestCheckFlags(t *testing.T) {
	tests := []struct {
		args    []string
		wantErr string // "" means the run function is reached
		servers []string
	}{
		{[]string{"--server", "127.0.0.1:3478"}, "", []string{"127.0.0.1:3478"}},
		{[]string{"--server", "a.example:3478", "--server", "[2001:db8::1]:3478", "--json", "--lifetime"}, "", []string{"a.example:3478", "[2001:db8::1]:3478"}},
		{nil, "at least one --server", nil},
		{[]string{"--server", "foo"}, "want host:port", nil},
		{[]string{"--server", "1.2.3.4:99999"}, "not in 1-65535", nil},
		{[]string{"--server", "1.2.3.4:0"}, "not in 1-65535", nil},
		{[]string{"--server", ":3478"}, "empty host", nil},
		{[]string{"--server", "1.2.3.4:3478", "--timeout", "0s"}, "must be positive", nil},
	}
	for _, tt := range tests {
		s, _, _ := testStreams()
		var got *CheckOptions
		c := NewCmdCheck(s, func(_ context.Context, o *CheckOptions) error { got = o; return nil })
		c.SetArgs(tt.args)
		c.SetOut(s.Out)
		c.SetErr(s.ErrOut)
		err := c.Execute()
		if tt.wantErr == "" {
			if err != nil || got == nil || !slices.Equal(got.Servers, tt.servers) {
				t.Errorf("%v: err %v, options %+v", tt.args, err, got)
			}
			continue
		}
		var fe *FlagError
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !asFlagError(err, &fe) {
			t.Errorf("%v: err %v, want a flag error containing %q", tt.args, err, tt.wantErr)
		}
	}
}

func asFlagError(err error, fe **FlagError) bool {
	for err != nil {
		if f, ok := err.(*FlagError); ok {
			*fe = f
			return true
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		err = u.Unwrap()
	}
	return false
}

// pmBound bounds a check that also probes the gateway for port mapping,
// which waits up to portmap.DefaultProbeTimeout for a gateway that is not
// there (a bound against hangs, not a speed target).
const pmBound = portmap.DefaultProbeTimeout + time.Second

// TestCheckMain runs `natlab check` end to end through Main, as a user
// would, on loopback.
func TestCheckMain(t *testing.T) {
	interop.NeedLoopback2(t)
	full := startServer(t, server.Addrs{Primary: netip.MustParseAddrPort("127.0.0.1:0"), AltIP: netip.MustParseAddr("127.0.0.2"), AltPort: interop.FreePortPair(t)})
	plain := startServer(t, server.Addrs{Primary: netip.MustParseAddrPort("127.0.0.1:0")})
	v6 := startServer(t, server.Addrs{Primary: netip.MustParseAddrPort("[::1]:0")})
	silent := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), interop.FreePortPair(t))
	closer := tcpListener(t, func(c net.Conn) {}) // a middlebox: accepts, then closes
	tcpOnly := tcpListener(t, answerBinding)      // STUN over TCP only: UDP is what fails

	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantOut    []string // substrings of stdout
		wantErr    string   // substring of the one-line stderr; "" for none
		maxTime    time.Duration
		wantNotRun []string // with --json: the not_run tests
		wantType   string
	}{
		{"full", []string{"check", "--server", full.String()}, ExitOK,
			[]string{"NAT type         open", "filtering        endpoint-independent", "port mapping     ", "TCP profile      EIM EIF preserving, mapped 127.0.0.1:"}, "", pmBound, nil, ""},
		{"no tcp", []string{"check", "--json", "--tcp=false", "--portmap=false", "--server", full.String()}, ExitOK,
			[]string{`"tcp": null`}, "", time.Second, nil, ""},
		{"no portmap", []string{"check", "--portmap=false", "--server", full.String()}, ExitOK,
			[]string{"NAT type         open"}, "", time.Second, nil, ""},
		{"hostname", []string{"check", "--server", strings.Replace(full.String(), "127.0.0.1", "localhost", 1)}, ExitOK,
			[]string{"NAT type         open"}, "", pmBound, nil, ""},
		{"ipv6 only server", []string{"check", "--portmap=false", "--server", v6.String()}, ExitOK,
			[]string{"NAT type         unknown", "translation      none (the server saw this host's own address)", "mapped address   [::1]:", "global IPv6      none"}, "", time.Second, nil, ""},
		{"full json", []string{"check", "--json", "--server", full.String()}, ExitOK, []string{`"port_mapping": {`}, "", pmBound,
			[]string{"hairpinning"}, "open"},
		{"plain STUN json", []string{"check", "--json", "--server", plain.String()}, ExitOK, nil, "", pmBound,
			[]string{"filtering", "hairpinning"}, "unknown"},
		{"server down", []string{"check", "--portmap=false", "--server", silent.String()}, ExitNoPath, nil,
			"STUN server unreachable: " + silent.String() + ": UDP port unreachable (ICMP), TCP connection refused", time.Second, nil, ""},
		{"server down json", []string{"check", "--json", "--server", silent.String()}, ExitNoPath, nil,
			"STUN server unreachable", pmBound, nil, ""},
		{"tcp closed at once", []string{"check", "--portmap=false", "--server", closer.String()}, ExitNoPath, nil,
			"TCP accepted, then closed without answering", time.Second, nil, ""},
		{"udp blocked", []string{"check", "--portmap=false", "--json", "--server", tcpOnly.String()}, ExitInternal, []string{`"nat_type": "udp-blocked"`},
			"no STUN server answered over UDP", time.Second, []string{"mapping", "filtering", "hairpinning", "port_allocation", "nat_depth"}, "udp-blocked"},
		{"unresolvable", []string{"check", "--server", "nosuchhost.invalid:3478"}, ExitInternal, nil,
			"resolve STUN server nosuchhost.invalid:3478", 6 * time.Second, nil, ""},
		{"malformed", []string{"check", "--server", "foo"}, ExitUsage, nil, "want host:port", time.Second, nil, ""},
		{"bad port", []string{"check", "--server", "1.2.3.4:99999"}, ExitUsage, nil, "not in 1-65535", time.Second, nil, ""},
		{"stray argument", []string{"check", "extra", "--server", "1.2.3.4:3478"}, ExitUsage, nil, "unknown command", time.Second, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, out, errOut := testStreams()
			start := time.Now()
			code := Main(tt.args, s)
			if d := time.Since(start); d > tt.maxTime {
				t.Errorf("took %v, want under %v", d, tt.maxTime)
			}
			if code != tt.wantCode {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.wantCode, out, errOut)
			}
			for _, w := range tt.wantOut {
				if !strings.Contains(out.String(), w) {
					t.Errorf("stdout lacks %q:\n%s", w, out)
				}
			}
			if tt.wantErr != "" {
				first, _, _ := strings.Cut(errOut.String(), "\n")
				if !strings.HasPrefix(first, "natlab: ") || !strings.Contains(first, tt.wantErr) {
					t.Errorf("stderr %q, want one line containing %q", errOut, tt.wantErr)
				}
			} else if errOut.Len() != 0 {
				t.Errorf("stderr %q", errOut)
			}
			if tt.wantType == "" {
				return
			}
			var doc struct {
				Schema  string `json:"schema"`
				Profile struct {
					NATType string `json:"nat_type"`
					NotRun  []struct {
						Test, Reason string
					} `json:"not_run"`
				} `json:"profile"`
			}
			if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
				t.Fatalf("stdout is not one JSON document: %v\n%s", err, out)
			}
			if doc.Schema != CheckSchema || doc.Profile.NATType != tt.wantType {
				t.Errorf("schema %q nat_type %q, want %q %q", doc.Schema, doc.Profile.NATType, CheckSchema, tt.wantType)
			}
			var got []string
			for _, n := range doc.Profile.NotRun {
				got = append(got, n.Test)
			}
			if !slices.Equal(got, tt.wantNotRun) {
				t.Errorf("not_run %+v, want %v", doc.Profile.NotRun, tt.wantNotRun)
			}
		})
	}
}

// TestCheckJSONFields pins the profile's JSON field names: the schema may
// only grow.
func TestCheckJSONFields(t *testing.T) {
	interop.NeedLoopback2(t)
	full := startServer(t, server.Addrs{Primary: netip.MustParseAddrPort("127.0.0.1:0"), AltIP: netip.MustParseAddr("127.0.0.2"), AltPort: interop.FreePortPair(t)})
	s, out, _ := testStreams()
	if code := Main([]string{"check", "--json", "--server", full.String()}, s); code != 0 {
		t.Fatalf("exit %d", code)
	}
	var doc struct {
		Schema        string                     `json:"schema"`
		NatlabVersion string                     `json:"natlab_version"`
		Profile       map[string]json.RawMessage `json:"profile"`
	}
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.NatlabVersion != buildinfo.Version() {
		t.Errorf("natlab_version %q, want %q", doc.NatlabVersion, buildinfo.Version())
	}
	for _, k := range []string{"nat_type", "mapping", "filtering", "mapped_address", "local_address", "hairpinning",
		"port_allocation", "server", "rtt_ms", "hints", "not_run", "duration_ms", "servers"} {
		if _, ok := doc.Profile[k]; !ok {
			t.Errorf("profile lacks %q", k)
		}
	}
	var pa map[string]json.RawMessage
	if err := json.Unmarshal(doc.Profile["port_allocation"], &pa); err != nil || pa["pattern"] == nil || pa["samples"] == nil {
		t.Errorf("port_allocation %s", doc.Profile["port_allocation"])
	}
}

// tcpListener serves each TCP connection on a loopback port with serve,
// then closes it; nothing listens on the same UDP port.
func tcpListener(t *testing.T, serve func(net.Conn)) netip.AddrPort {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = l.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				serve(c)
			})
		}
	})
	return netip.MustParseAddrPort(l.Addr().String())
}

// answerBinding answers one RFC 5389-framed Binding request.
func answerBinding(c net.Conn) {
	hdr := make([]byte, 20)
	if _, err := io.ReadFull(c, hdr); err != nil {
		return
	}
	if _, err := io.ReadFull(c, make([]byte, binary.BigEndian.Uint16(hdr[2:4]))); err != nil {
		return
	}
	var id [stun.TransactionIDSize]byte
	copy(id[:], hdr[8:20])
	from := c.RemoteAddr().(*net.TCPAddr)
	res, err := stun.Build(stun.NewTransactionIDSetter(id), stun.BindingSuccess, &stun.XORMappedAddress{IP: from.IP, Port: from.Port})
	if err == nil {
		_, _ = c.Write(res.Raw)
	}
}

// --family both: the top-level profile stays the IPv4 one, "ipv6" holds
// the IPv6 one, and the text shows both under their headings.
func TestCheckBothFamilies(t *testing.T) {
	interop.NeedLoopback2(t)
	interop.NeedLoopback6(t)
	v4 := startServer(t, server.Addrs{Primary: netip.MustParseAddrPort("127.0.0.1:0"), AltIP: netip.MustParseAddr("127.0.0.2"), AltPort: interop.FreePortPair(t)})
	v6 := startServer(t, server.Addrs{Primary: netip.MustParseAddrPort("[::1]:0")})
	args := []string{"check", "--portmap=false", "--family", "both", "--server", v4.String(), "--server", v6.String()}
	s, out, errOut := testStreams()
	if code := Main(append(args, "--json"), s); code != ExitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var doc checkDocument
	if err := decodeStrict(out.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Profile == nil || doc.Profile.Family != "ipv4" || doc.Profile.Server != v4.String() || doc.Profile.NATType != natclass.Open {
		t.Errorf("top-level profile %+v", doc.Profile)
	}
	if doc.IPv6 == nil || doc.IPv6.Family != "ipv6" || doc.IPv6.Server != v6.String() || doc.IPv6.Translation != natclass.TranslationNone {
		t.Errorf("ipv6 profile %+v (%s)", doc.IPv6, doc.IPv6Error)
	}
	s, out, errOut = testStreams()
	if code := Main(args, s); code != ExitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, w := range []string{"IPv4\nNAT type         open", "\nIPv6\nNAT type", "mapped address   [::1]:"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("text lacks %q:\n%s", w, out)
		}
	}
}

func TestCheckFamilyUsage(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"check", "--family", "4", "--server", "[::1]:3478"}, "--family 4: no IPv4 --server given"},
		{[]string{"check", "--family", "6", "--server", "127.0.0.1:3478"}, "--family 6: no IPv6 --server given"},
		{[]string{"check", "--family", "both", "--server", "127.0.0.1:3478"}, "--family both: no IPv6 --server given"},
		{[]string{"check", "--family", "5", "--server", "[::1]:3478"}, "want 4, 6 or both"},
	} {
		s, _, errOut := testStreams()
		if code := Main(c.args, s); code != ExitUsage || !strings.Contains(errOut.String(), c.want) {
			t.Errorf("%v: exit %d, stderr %q, want usage error %q", c.args, code, errOut, c.want)
		}
	}
}
