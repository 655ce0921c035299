package cmd

import (
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestProbeUnreachableServer: no UDP answer and TCP refused is "no path"
// (exit 4) with one clear line, within the UDP-blocked bound plus a
// connect, not a hang.
func TestProbeUnreachableServer(t *testing.T) {
	// A port nobody listens on, UDP or TCP: bind it, note it, close it.
	l, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.LocalAddr().(*net.UDPAddr).Port
	l.Close()
	closer := tcpListener(t, func(net.Conn) {}) // a middlebox that accepts TCP and closes it
	for _, srv := range []string{"127.0.0.1:" + strconv.Itoa(port), closer.String()} {
		s, out, errOut := testStreams()
		start := time.Now()
		code := Main([]string{"probe", "--json", "--server", srv}, s)
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("%s: took %v", srv, d)
		}
		if code != ExitNoPath {
			t.Fatalf("%s: exit %d, want %d\nstdout: %s\nstderr: %s", srv, code, ExitNoPath, out, errOut)
		}
		if lines := strings.Split(strings.TrimSpace(errOut.String()), "\n"); len(lines) != 1 || !strings.Contains(lines[0], "no path to the server") {
			t.Errorf("%s: stderr %q, want one line saying there is no path", srv, errOut)
		}
	}
}

func TestProbeFlagErrors(t *testing.T) {
	for _, args := range [][]string{
		{"probe"},
		{"probe", "--server", "foo"},
		{"probe", "--server", "127.0.0.1:3478", "--join", "abcd-efgh-ijkl-mnop", "--code", "abcd-efgh-ijkl-mnop"},
		{"probe", "--server", "127.0.0.1:3478", "--join", "short"},
		{"probe", "--server", "127.0.0.1:3478", "--turn-user", "u"},
		{"probe", "--server", "127.0.0.1:3478", "--turn-secret", "s", "--turn-password", "p"},
	} {
		s, _, errOut := testStreams()
		if code := Main(args, s); code != ExitUsage {
			t.Errorf("%v: exit %d, want %d (%s)", args, code, ExitUsage, errOut)
		}
	}
}
