package cmd

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/natlab/natlab/fleet"
	"github.com/natlab/natlab/internal/interop"
	"github.com/natlab/natlab/server"
)

// freeTCPPort is a loopback port nothing listens on right now.
func freeTCPPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestFleetPrometheus is the deployment path end to end: two
// `natlab check --interval --metrics` loops (weights 2 and 3), Debian's
// real Prometheus scraping them on loopback, and `natlab fleet
// --prometheus` reading the fleet back through Prometheus' HTTP API.
func TestFleetPrometheus(t *testing.T) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("prometheus not installed (Debian package prometheus)")
	}
	srv := startServer(t, server.Addrs{Primary: netip.MustParseAddrPort("127.0.0.1:0"), AltIP: netip.MustParseAddr("127.0.0.2"), AltPort: interop.FreePortPair(t)})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	// Two checking hosts, each with its metrics endpoint.
	var targets []string
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for _, w := range []int{2, 3} {
		addr := fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t))
		targets = append(targets, strconv.Quote(addr))
		root := NewRootCmd(IOStreams{In: &bytes.Buffer{}, Out: &syncBuffer{}, ErrOut: &syncBuffer{}})
		root.SetArgs([]string{"check", "--server", srv.String(), "--portmap=false", "--interval", "1s", "--metrics", addr, "--weight", strconv.Itoa(w)})
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := root.ExecuteContext(ctx); err != nil {
				t.Errorf("check --interval: %v", err)
			}
		}()
	}

	// Prometheus scraping them every second.
	dir := t.TempDir()
	cfg := fmt.Sprintf("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: natlab\n    static_configs:\n      - targets: [%s, %s]\n", targets[0], targets[1])
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	promAddr := fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t))
	var promLog bytes.Buffer
	prom := exec.CommandContext(ctx, bin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+promAddr)
	prom.Stdout, prom.Stderr = &promLog, &promLog
	if err := prom.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = prom.Process.Kill(); _ = prom.Wait() }()

	// Wait until both hosts are in Prometheus, then read the fleet.
	url := "http://" + promAddr
	for {
		f := fleet.New()
		err := fleet.LoadPrometheus(ctx, url, f.Add)
		if err == nil && f.Hosts() == 2 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("Prometheus never had both hosts: %v (%d hosts)\n%s", err, f.Hosts(), promLog.String())
		case <-time.After(500 * time.Millisecond):
		}
	}
	s, out, errOut := testStreams()
	if code := Main([]string{"fleet", "--json", "--prometheus", url}, s); code != ExitOK {
		t.Fatalf("fleet --prometheus: exit %d: %s", code, errOut)
	}
	var r fleet.Report
	if err := decodeStrict(out.Bytes(), &r); err != nil {
		t.Fatal(err)
	}
	// Two open hosts on loopback, weights 2 and 3: one direct pair.
	if r.Hosts != 2 || r.Weight != 5 || r.Pairs != 1 || r.Techniques["udp"] != 1 || r.ByNATType[0].NATType != "open" {
		t.Errorf("fleet from Prometheus: %+v", r)
	}
}
