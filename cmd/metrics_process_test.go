package cmd_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v3"
)

var (
	metricsURLRE = regexp.MustCompile(`serving metrics on (\S+)`)
	stunAddrRE   = regexp.MustCompile(`serving STUN on udp (\S+)`)
)

// sample is the value of an unlabelled metric in an exposition, or -1.
func sample(text, name string) float64 {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(text)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// TestServeMetricsScrape starts the real `natlab serve --metrics`, scrapes
// it, sends one STUN Binding request and scrapes again.
func TestServeMetricsScrape(t *testing.T) {
	bin := natlabBinary(t)
	help, _ := exec.Command(bin, "serve", "--help").CombinedOutput()
	if !strings.Contains(string(help), "--metrics") {
		t.Skip("natlab serve has no --metrics flag yet: cmd/serve.go must call startServeMetrics (see cmd/metrics.go)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, bin, "serve", "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0")
	stdout, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := c.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Process.Kill(); _ = c.Wait() }()
	found := func(r io.Reader, re *regexp.Regexp) chan string {
		ch := make(chan string, 1)
		go func() {
			sc := bufio.NewScanner(r)
			for sc.Scan() {
				if m := re.FindStringSubmatch(sc.Text()); m != nil {
					ch <- m[1]
					break
				}
			}
			_, _ = io.Copy(io.Discard, r) // keep the pipe drained
		}()
		return ch
	}
	stunCh, urlCh := found(stdout, stunAddrRE), found(stderr, metricsURLRE)
	var stunAddr, url string
	for stunAddr == "" || url == "" {
		select {
		case stunAddr = <-stunCh:
		case url = <-urlCh:
		case <-ctx.Done():
			t.Fatal("natlab serve did not print its STUN and metrics addresses")
		}
	}
	get := func() string {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s", url, resp.Status)
		}
		return string(b)
	}
	before := get()
	for _, name := range []string{"natlab_stun_requests_total", "natlab_stun_responses_total", "natlab_stun_errors_total",
		"natlab_rendezvous_pairings", "natlab_rendezvous_paired_total", "process_start_time_seconds"} {
		if sample(before, name) < 0 {
			t.Errorf("%s missing:\n%s", name, before)
		}
	}
	conn, err := net.Dial("udp4", stunAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write(stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint).Raw); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Read(make([]byte, 1500)); err != nil {
		t.Fatalf("no STUN answer: %v", err)
	}
	after := get()
	for _, name := range []string{"natlab_stun_requests_total", "natlab_stun_responses_total"} {
		if b, a := sample(before, name), sample(after, name); a != b+1 {
			t.Errorf("%s: %v, then %v after one Binding request", name, b, a)
		}
	}
}
