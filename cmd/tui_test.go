package cmd_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"
)

// tmuxSession runs cmdline in a detached 80×24 tmux session on a socket
// of its own, so it cannot touch anyone's tmux; the server is killed in
// Cleanup whatever happens.
type tmuxSession struct {
	t      *testing.T
	socket string
}

func newTmux(t *testing.T, cmdline string) *tmuxSession {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Skip("tmux is not installed (apt-get install tmux): cannot drive the TUI in a real terminal")
	}
	s := &tmuxSession{t: t, socket: fmt.Sprintf("natlab-test-%d-%d", os.Getpid(), time.Now().UnixNano())}
	t.Cleanup(func() {
		_ = exec.Command("tmux", "-L", s.socket, "kill-server").Run()
		// tmux leaves its socket file behind; remove it as well.
		dir := os.Getenv("TMUX_TMPDIR")
		if dir == "" {
			dir = "/tmp"
		}
		_ = os.Remove(filepath.Join(dir, fmt.Sprintf("tmux-%d", os.Getuid()), s.socket))
	})
	out, err := exec.Command("tmux", "-L", s.socket, "-f", "/dev/null", "new-session", "-d", "-x", "80", "-y", "24", cmdline).CombinedOutput()
	if err != nil {
		t.Fatalf("tmux new-session: %v\n%s", err, out)
	}
	return s
}

func (s *tmuxSession) keys(keys ...string) {
	s.t.Helper()
	args := append([]string{"-L", s.socket, "send-keys", "-t", "0"}, keys...)
	if out, err := exec.Command("tmux", args...).CombinedOutput(); err != nil {
		s.t.Fatalf("tmux send-keys %v: %v\n%s", keys, err, out)
	}
}

func (s *tmuxSession) capture() string {
	s.t.Helper()
	out, err := exec.Command("tmux", "-L", s.socket, "capture-pane", "-p", "-t", "0").Output()
	if err != nil {
		s.t.Fatalf("tmux capture-pane: %v", err)
	}
	return string(out)
}

// waitFor polls the screen until it contains every want.
func (s *tmuxSession) waitFor(d time.Duration, want ...string) string {
	s.t.Helper()
	deadline := time.Now().Add(d)
	for {
		screen := s.capture()
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(screen, w)
		}
		if ok {
			return screen
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("after %v the screen lacks %q:\n%s", d, want, screen)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestTUIMatrixInTmux drives the real binary's `lab --matrix` TUI as a
// person would: watch it fill, move, open a pair, go back, ask for help,
// quit, and read the plain-text report left behind.
func TestTUIMatrixInTmux(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("natlab lab runs on Linux only")
	}
	if testing.Short() {
		t.Skip("-short: the matrix takes about 30 s (36 pairs)")
	}
	bin := natlabBinary(t)
	s := newTmux(t, "env NO_COLOR=1 TERM=xterm-256color "+bin+" lab --matrix; echo EXIT=$?; sleep 60")

	screen := s.waitFor(30*time.Second, "natlab lab --matrix", "A carrier", "pairs")
	t.Logf("in progress:\n%s", screen)
	screen = s.waitFor(150*time.Second, "36/36 pairs", "Every measured outcome equals its prediction")
	t.Logf("matrix:\n%s", screen)
	if !strings.Contains(screen, "A carrier       [relay]") {
		t.Errorf("the cursor is not on the first cell (carrier × carrier):\n%s", screen)
	}
	for i, line := range strings.Split(screen, "\n") {
		if w := len([]rune(line)); w > 80 {
			t.Errorf("line %d is %d cells wide", i+1, w)
		}
	}

	// Down ×2, Right ×3: row C (full-cone) × column D (open).
	s.keys("Down", "Down", "Right", "Right", "Right")
	s.waitFor(5*time.Second, "▸ full-cone × open")
	s.keys("Enter")
	screen = s.waitFor(5*time.Second, "full-cone × open", "technique", "why:", "esc back")
	t.Logf("details:\n%s", screen)
	s.keys("Escape")
	s.waitFor(5*time.Second, "▸ full-cone × open", "36/36 pairs")
	s.keys("?")
	screen = s.waitFor(5*time.Second, "natlab — keys", "rerun")
	t.Logf("help:\n%s", screen)
	s.keys("?")
	s.waitFor(5*time.Second, "36/36 pairs")
	s.keys("q")
	screen = s.waitFor(10*time.Second, "EXIT=0")
	if !strings.Contains(screen, "every measured outcome equals its prediction") {
		t.Errorf("after q the text report is missing:\n%s", screen)
	}
}

// TestTUIProbeInTmux runs `natlab serve` on loopback, a `natlab probe` in
// a real terminal and its peer piped, then reruns both and quits.
func TestTUIProbeInTmux(t *testing.T) {
	bin := natlabBinary(t)
	// A fixed loopback port would collide with parallel runs: ask the
	// kernel for a free one, then give it to the server.
	server := startServeProcess(t, bin)
	code := "tuit-estc-odea-bcde"
	s := newTmux(t, fmt.Sprintf("env NO_COLOR=1 TERM=xterm-256color %s probe --server %s --code %s --pair-timeout 60s; echo EXIT=$?; sleep 60", bin, server, code))
	screen := s.waitFor(20*time.Second, "waiting for the peer", code)
	t.Logf("waiting:\n%s", screen)

	peer := func() {
		out, err := exec.Command(bin, "probe", "--server", server, "--code", code, "--json", "--pair-timeout", "60s").CombinedOutput()
		if err != nil {
			t.Errorf("peer probe: %v\n%s", err, out)
		}
	}
	peer()
	screen = s.waitFor(20*time.Second, "Direct P2P works", "technique", "r rerun")
	t.Logf("verdict:\n%s", screen)
	if !strings.Contains(screen, "peer (") || !strings.Contains(screen, "this host (") {
		t.Errorf("the profiles are not side by side:\n%s", screen)
	}

	// A rerun pairs again on a code derived from the first: the piped
	// peer stands in for the other host pressing r.
	s.keys("r")
	// The code appears once the server has registered it.
	screen = s.waitFor(10*time.Second, "waiting for the peer", "pairing code:")
	peerCode := regexp.MustCompile(`[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}`).FindString(screen)
	if peerCode == "" || peerCode == code {
		t.Fatalf("rerun shows code %q, want one derived from %q", peerCode, code)
	}
	out, err := exec.Command(bin, "probe", "--server", server, "--code", peerCode, "--json", "--pair-timeout", "60s").CombinedOutput()
	if err != nil {
		t.Fatalf("peer of the rerun: %v\n%s", err, out)
	}
	s.waitFor(20*time.Second, "Direct P2P works", "r rerun")
	s.keys("q")
	screen = s.waitFor(10*time.Second, "EXIT=0")
	if !strings.Contains(screen, "technique") {
		t.Errorf("after q the text report is missing:\n%s", screen)
	}
}

// startServeProcess runs `natlab serve` on a free loopback port until the
// test ends and returns its address once its first line says it listens:
// a probe started before would find the port closed and say the server
// is down.
func startServeProcess(t *testing.T, bin string) string {
	t.Helper()
	server := fmt.Sprintf("127.0.0.1:%d", freeLoopbackUDPPort(t))
	srv := exec.Command(bin, "serve", "--listen", server)
	srvOut, err := srv.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	if _, err := bufio.NewReader(srvOut).ReadString('\n'); err != nil {
		t.Fatalf("serve: %v", err)
	}
	go func() { _, _ = io.Copy(io.Discard, srvOut) }()
	return server
}

func freeLoopbackUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// TestTUIFleetInTmux shows the example fleet's heat map in a real
// terminal, quits, and reads the text report left behind.
func TestTUIFleetInTmux(t *testing.T) {
	bin := natlabBinary(t)
	s := newTmux(t, "env NO_COLOR=1 TERM=xterm-256color "+bin+" fleet --traffic 1M ../examples/fleet/hosts.jsonl; echo EXIT=$?; sleep 60")
	screen := s.waitFor(20*time.Second, "natlab fleet · ../examples/fleet/hosts.jsonl", "300 hosts", "direct share", "E symmetric", "relayed pairs")
	t.Logf("heat map:\n%s", screen)
	for i, line := range strings.Split(screen, "\n") {
		if w := len([]rune(line)); w > 80 {
			t.Errorf("line %d is %d cells wide", i+1, w)
		}
	}
	s.keys("q")
	screen = s.waitFor(10*time.Second, "EXIT=0")
	if !strings.Contains(screen, "NAT types behind the relay share") {
		t.Errorf("after q the text report is missing:\n%s", screen)
	}
}

// TestTUIQuitEarlyInTmux: q while the probe still waits for its peer is
// the user stopping it (exit 130, one line), not an internal error.
func TestTUIQuitEarlyInTmux(t *testing.T) {
	bin := natlabBinary(t)
	server := startServeProcess(t, bin)
	s := newTmux(t, fmt.Sprintf("env NO_COLOR=1 TERM=xterm-256color %s probe --server %s; echo EXIT=$?; sleep 60", bin, server))
	s.waitFor(20*time.Second, "waiting for the peer")
	s.keys("q")
	screen := s.waitFor(10*time.Second, "EXIT=130")
	if !strings.Contains(screen, "stopped before the run finished") || strings.Contains(screen, "internal") {
		t.Errorf("after an early q:\n%s", screen)
	}
}
