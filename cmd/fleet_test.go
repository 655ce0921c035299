package cmd

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/natlab/natlab/fleet"
	"github.com/natlab/natlab/internal/interop"
	"github.com/natlab/natlab/server"
)

// TestFleetFromCheck pipes two real `natlab check --json` documents (one
// with a weight added) into `natlab fleet -` as a user would.
func TestFleetFromCheck(t *testing.T) {
	srv := startServer(t, server.Addrs{Primary: netip.MustParseAddrPort("127.0.0.1:0"), AltIP: netip.MustParseAddr("127.0.0.2"), AltPort: interop.FreePortPair(t)})
	var docs bytes.Buffer
	for i := range 2 {
		s, out, errOut := testStreams()
		if code := Main([]string{"check", "--json", "--portmap=false", "--server", srv.String()}, s); code != ExitOK {
			t.Fatalf("check: exit %d: %s", code, errOut)
		}
		if i == 1 {
			var m map[string]any
			if err := json.Unmarshal(out.Bytes(), &m); err != nil {
				t.Fatal(err)
			}
			m["weight"] = 3
			b, _ := json.Marshal(m)
			out.Reset()
			out.Write(b)
		}
		docs.Write(out.Bytes())
	}
	s, out, errOut := testStreams()
	s.In = &docs
	if code := Main([]string{"fleet", "--json", "--traffic", "1M", "-"}, s); code != ExitOK {
		t.Fatalf("fleet: exit %d: %s", code, errOut)
	}
	var r fleet.Report
	if err := decodeStrict(out.Bytes(), &r); err != nil {
		t.Fatalf("fleet --json: %v\n%s", err, out)
	}
	if r.Schema != fleet.Schema || r.Hosts != 2 || r.Pairs != 1 || r.Weight != 4 || r.DirectShare != 1 || r.Techniques["udp"] != 1 || r.RelayBandwidthBps != 0 {
		t.Errorf("two open hosts: %+v", r)
	}
}

// TestFleetExampleText prints the README's example fleet as text: it
// fits 80 columns and names the relay share's NAT types.
func TestFleetExampleText(t *testing.T) {
	path := filepath.Join("..", "examples", "fleet", "hosts.jsonl")
	if _, err := os.Stat(path); err != nil {
		t.Skipf("no example fleet: %v", err)
	}
	s, out, errOut := testStreams()
	if code := Main([]string{"fleet", "--traffic", "1M", path}, s); code != ExitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, w := range []string{"natlab fleet: ", "direct ", "relay bandwidth at 1 Mbit/s", "direct share per NAT-type pair", "symmetric"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
	for _, l := range strings.Split(out.String(), "\n") {
		if n := len([]rune(l)); n > 80 {
			t.Errorf("line of %d columns: %q", n, l)
		}
	}
}

func TestFleetBadInput(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"schema":"natlab.check/v1","profile":{"nat_type":"open"},"weight":-2}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"fleet"}, ExitUsage, "give profile files"},
		{[]string{"fleet", "--traffic", "fast", dir}, ExitUsage, "--traffic"},
		{[]string{"fleet", filepath.Join(dir, "missing.json")}, ExitInternal, "no such file"},
		{[]string{"fleet", bad}, ExitInternal, "document 1: weight -2"},
		{[]string{"fleet", "-"}, ExitInternal, "stdin: no documents"},
		{[]string{"fleet", "--prometheus", "localhost:9090"}, ExitUsage, "want the server's http(s)://HOST:PORT"},
		{[]string{"fleet", "--timeout", "2s", "--prometheus", "http://127.0.0.1:1"}, ExitInternal, "prometheus query natlab_check_summary"},
		{[]string{"check", "--server", "127.0.0.1:3478", "--metrics", "127.0.0.1:0"}, ExitUsage, "--metrics needs --interval"},
		{[]string{"check", "--server", "127.0.0.1:3478", "--interval", "10ms"}, ExitUsage, "--interval 10ms"},
		{[]string{"check", "--server", "127.0.0.1:3478", "--weight", "-1"}, ExitUsage, "--weight -1"},
	} {
		s, _, errOut := testStreams()
		code := Main(tc.args, s)
		first, _, _ := strings.Cut(errOut.String(), "\n")
		if code != tc.code || !strings.Contains(first, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d and %q", tc.args, code, errOut, tc.code, tc.want)
		}
	}
}
