package cmd_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/natlab/natlab/probe"
	"github.com/natlab/natlab/testnet"
)

// processBound bounds the whole three-process test: build, lab, profile,
// pair, five techniques.
const processBound = 2 * time.Minute

// natlabBinary builds the real binary into the test's temporary directory.
func natlabBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "natlab")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/natlab/natlab/cmd/natlab").CombinedOutput()
	if err != nil {
		t.Fatalf("build natlab: %v\n%s", err, out)
	}
	return bin
}

var codeRE = regexp.MustCompile(`pairing code: ([a-z2-7-]+)`)

// TestProbeThreeProcesses runs `natlab serve` and two `natlab probe`
// processes in three namespaces of the kernel lab, as a user would on
// three hosts.
func TestProbeThreeProcesses(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), processBound)
	defer cancel()
	topo, err := testnet.PairTopology("full-cone", "port-restricted-cone")
	if err != nil {
		t.Fatal(err)
	}
	lab, err := testnet.Start(ctx, topo, testnet.Kernel)
	if errors.Is(err, testnet.ErrNeedPrivileges) {
		t.Skipf("kernel lab: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer lab.Close()
	bin := natlabBinary(t)

	serve, err := lab.Server.Command(ctx, bin, "serve", "--listen", "203.0.113.10:3478", "--alt-ip", "203.0.113.11")
	if err != nil {
		t.Fatal(err)
	}
	// Both buffers are read here while the processes' copiers write them.
	var serveErr, aStderr lockedBuffer
	serve.Stderr = &serveErr
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = serve.Process.Kill(); _ = serve.Wait() }()

	server := "203.0.113.10:3478"
	a, _ := lab.Site("a").Host.Command(ctx, bin, "probe", "--server", server, "--json", "--pair-timeout", "60s")
	var aOut bytes.Buffer
	a.Stdout = &aOut
	aErr, err := a.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	// A closed port answers ICMP port unreachable, which the probe takes
	// as a dead server at once: start it once the server has bound.
	for !strings.Contains(serveErr.String(), "STUN server listening") {
		select {
		case <-ctx.Done():
			t.Fatalf("natlab serve never listened:\n%s", serveErr.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	codeCh := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(aErr)
		for sc.Scan() {
			_, _ = aStderr.Write([]byte(sc.Text() + "\n"))
			if m := codeRE.FindStringSubmatch(sc.Text()); m != nil {
				codeCh <- m[1]
			}
		}
	}()
	var code string
	select {
	case code = <-codeCh:
	case <-ctx.Done():
		t.Fatalf("probe A printed no pairing code; stderr:\n%s\nserver:\n%s", aStderr.String(), serveErr.String())
	}

	b, _ := lab.Site("b").Host.Command(ctx, bin, "probe", "--server", server, "--join", code, "--json")
	bOut, bErr := b.Output()
	aWait := a.Wait()
	if bErr != nil || aWait != nil {
		t.Fatalf("probes: a=%v b=%v\nA stderr:\n%s\nB stderr:\n%s", aWait, bErr, aStderr.String(), stderrOf(bErr))
	}
	for name, out := range map[string][]byte{"A": aOut.Bytes(), "B": bOut} {
		var rep probe.Report
		if err := json.Unmarshal(out, &rep); err != nil {
			t.Fatalf("%s: report is not JSON: %v\n%s", name, err, out)
		}
		if rep.Schema != probe.ProbeSchema || !rep.Verdict.Direct {
			t.Errorf("%s: %+v", name, rep.Verdict)
		}
		t.Logf("%s (%s): %s", name, rep.Side, rep.Verdict.Summary)
	}

	// A third peer cannot use the code again.
	c, _ := lab.Site("b").Host.Command(ctx, bin, "probe", "--server", server, "--join", code, "--pair-timeout", "10s")
	out, err := c.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Fatalf("third peer: err %v, output %s", err, out)
	}
	if !bytes.Contains(out, []byte("left")) && !bytes.Contains(out, []byte("two peers")) {
		t.Errorf("third peer: unclear message %q", out)
	}
	// An unknown code fails at once with a clear message.
	d, _ := lab.Site("a").Host.Command(ctx, bin, "probe", "--server", server, "--join", "aaaa-bbbb-cccc-dddd")
	out, err = d.CombinedOutput()
	if !errors.As(err, &ee) || !bytes.Contains(out, []byte("unknown or expired")) {
		t.Errorf("unknown code: err %v, output %s", err, out)
	}
}

func stderrOf(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(ee.Stderr)
	}
	return ""
}

// lockedBuffer is a bytes.Buffer a process's output copier writes while
// the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
