package cmd

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/transport/v4/stdnet"

	"github.com/natlab/natlab/relay"
	"github.com/natlab/natlab/rendezvous"
	"github.com/natlab/natlab/server"
)

// startServeLogged runs `natlab serve` with args and returns its primary
// address and its stderr; it stops at the end of the test.
func startServeLogged(t *testing.T, args ...string) (string, *syncBuffer) {
	t.Helper()
	var errOut syncBuffer
	s := IOStreams{In: strings.NewReader(""), Out: &syncBuffer{}, ErrOut: &errOut}
	ready := make(chan server.Addrs, 1)
	c := NewCmdServe(s, func(ctx context.Context, o *ServeOptions) error {
		o.Ready = func(srv *server.Server) { ready <- srv.Addrs() }
		return runServe(ctx, o)
	})
	c.SetArgs(args)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.ExecuteContext(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(serveTimeout):
			t.Error("serve did not stop")
		}
	})
	select {
	case a := <-ready:
		return a.Primary.String(), &errOut
	case err := <-done:
		t.Fatalf("serve exited: %v\n%s", err, errOut.String())
	case <-time.After(serveTimeout):
		t.Fatal("serve did not start")
	}
	return "", nil
}

// TestServeOperatorLog: --log-format json logs start-up, each pairing
// with its code hashed (never in clear), TURN allocations and
// authentication failures, one JSON object per line.
func TestServeOperatorLog(t *testing.T) {
	dir := t.TempDir()
	users := filepath.Join(dir, "users")
	if err := os.WriteFile(users, []byte("alice:wonderland\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr, logs := startServeLogged(t, "--listen", "127.0.0.1:0", "--users", users, "--allow-peer", "127.0.0.0/8", "--log-format", "json")
	n, err := stdnet.NewNet()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// A pairing: two peers meet on one code.
	code, err := rendezvous.NewCode()
	if err != nil {
		t.Fatal(err)
	}
	norm, err := rendezvous.NormalizeCode(code)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			c, err := rendezvous.Dial(n, addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			if _, err := c.Pair(ctx, rendezvous.Meet, code, json.RawMessage(`{}`), nil); err != nil {
				t.Errorf("pair: %v", err)
			}
		})
	}
	wg.Wait()

	// A TURN allocation, and a wrong password.
	a, err := relay.Allocate(ctx, relay.AllocOptions{Net: n, Server: addr, Username: "alice", Password: "wonderland"})
	if err != nil {
		t.Fatalf("allocate: %v", err)
	}
	_ = a.Close()
	if _, err := relay.Allocate(ctx, relay.AllocOptions{Net: n, Server: addr, Username: "alice", Password: "wrong", Timeout: 2 * time.Second}); err == nil {
		t.Error("allocated with a wrong password")
	}

	want := map[string]bool{"STUN server listening": false, "pairing created": false, "pairing joined": false,
		"TURN allocation": false}
	authFailure := false
	deadline := time.Now().Add(serveTimeout)
	for {
		text := logs.String()
		if strings.Contains(text, norm) || strings.Contains(text, code) {
			t.Fatalf("the pairing code appears in the log:\n%s", text)
		}
		sc := bufio.NewScanner(strings.NewReader(text))
		for sc.Scan() {
			var line map[string]any
			if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
				t.Fatalf("log line is not JSON: %q", sc.Text())
			}
			msg, _ := line["msg"].(string)
			if _, ok := want[msg]; ok {
				want[msg] = true
			}
			if strings.HasPrefix(msg, "pairing ") {
				if h, _ := line["code_hash"].(string); h != rendezvous.CodeHash(norm) {
					t.Errorf("%s: code_hash %q, want %q", msg, h, rendezvous.CodeHash(norm))
				}
			}
			if strings.HasPrefix(msg, "TURN authentication failed") {
				authFailure = true
			}
		}
		done := authFailure
		for _, ok := range want {
			done = done && ok
		}
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("missing log lines (%v, auth failure %v):\n%s", want, authFailure, text)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestServeStartupFailures: a TCP port that cannot be opened fails the
// start-up (exit 1, one line naming the address once) unless
// --tcp-optional; bad log flags are usage errors.
func TestServeStartupFailures(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	taken := l.Addr().String()
	s, _, errOut := testStreams()
	if code := Main([]string{"serve", "--listen", taken}, s); code != ExitInternal {
		t.Errorf("TCP port taken: exit %d, want %d", code, ExitInternal)
	}
	first, _, _ := strings.Cut(errOut.String(), "\n")
	if strings.Count(first, taken) != 1 || !strings.Contains(first, "--tcp-optional") {
		t.Errorf("stderr %q: want one line naming %s once and the flag", errOut, taken)
	}
	// With --tcp-optional it serves UDP.
	_, logs := startServeLogged(t, "--listen", taken, "--tcp-optional")
	if !strings.Contains(logs.String(), "serving STUN over UDP only") {
		t.Errorf("log lacks the UDP-only warning:\n%s", logs)
	}
	for _, args := range [][]string{
		{"serve", "--listen", "127.0.0.1:0", "--log-level", "loud"},
		{"serve", "--listen", "127.0.0.1:0", "--log-format", "xml"},
		{"serve", "--listen", ":abc"},
	} {
		s, _, errOut := testStreams()
		if code := Main(args, s); code != ExitUsage || !strings.Contains(errOut.String(), "natlab serve --help") {
			t.Errorf("%v: exit %d, stderr %q", args, code, errOut)
		}
	}
}

// TestSecretsFromFilesAndEnvironment: TURN secrets come from files or
// environment variables, never only from the command line.
func TestSecretsFromFilesAndEnvironment(t *testing.T) {
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwFile, []byte("from-file\nignored\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	probeOpts := func(env map[string]string, args ...string) (*ProbeOptions, error) {
		for k, v := range env {
			t.Setenv(k, v)
		}
		var got *ProbeOptions
		s, _, _ := testStreams()
		c := NewCmdProbe(s, func(_ context.Context, o *ProbeOptions) error { got = o; return nil })
		c.SetArgs(append([]string{"--server", "127.0.0.1:3478"}, args...))
		c.SilenceErrors, c.SilenceUsage = true, true
		err := c.Execute()
		return got, err
	}
	o, err := probeOpts(nil, "--turn-user", "u", "--turn-password-file", pwFile)
	if err != nil || o.TURNPassword != "from-file" {
		t.Errorf("--turn-password-file: %v, password %q", err, o.TURNPassword)
	}
	o, err = probeOpts(map[string]string{EnvTURNPassword: "from-env"}, "--turn-user", "u")
	if err != nil || o.TURNPassword != "from-env" || o.relayConfig().Password != "from-env" {
		t.Errorf("$%s: %v, %+v", EnvTURNPassword, err, o)
	}
	o, err = probeOpts(map[string]string{EnvTURNPassword: "", EnvAuthSecret: "s3cret"})
	if err != nil || o.TURNSecret != "s3cret" || o.relayConfig() == nil {
		t.Errorf("$%s: %v, %+v", EnvAuthSecret, err, o)
	}
	_, err = probeOpts(map[string]string{EnvAuthSecret: ""}, "--turn-user", "u", "--turn-password", "p", "--turn-password-file", pwFile)
	var fe *FlagError
	if !errors.As(err, &fe) {
		t.Errorf("flag and file together: %v, want a usage error", err)
	}

	// serve takes the REST secret from the environment.
	t.Setenv(EnvAuthSecret, "s3cret")
	var got *ServeOptions
	s, _, _ := testStreams()
	c := NewCmdServe(s, func(_ context.Context, o *ServeOptions) error { got = o; return nil })
	c.SetArgs([]string{"--listen", "127.0.0.1:0"})
	if err := c.Execute(); err != nil || got.AuthSecret != "s3cret" || !got.turnEnabled() {
		t.Errorf("serve with $%s: %v, %+v", EnvAuthSecret, err, got)
	}
}

// TestProbeIntervalNoPeerLine: an --interval round nobody joins is a JSON
// line with result no-peer, not only a message on stderr.
func TestProbeIntervalNoPeerLine(t *testing.T) {
	addr, _ := startServeLogged(t, "--listen", "127.0.0.1:0")
	var out, errOut syncBuffer
	s := IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}
	c := NewCmdProbe(s, nil)
	c.SetArgs([]string{"--server", addr, "--interval", "5s", "--pair-timeout", "500ms", "--code", "aaaa-bbbb-cccc-dddd"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.ExecuteContext(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("probe --interval: %v", err)
		}
	}()
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(out.String(), "\n") {
		if time.Now().After(deadline) {
			t.Fatalf("no round line; stderr:\n%s", errOut.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	line, _, _ := strings.Cut(out.String(), "\n")
	var r roundLine
	if err := json.Unmarshal([]byte(line), &r); err != nil || r.Schema != ProbeRoundSchema || r.Result != "no-peer" || r.Round != 1 || !strings.Contains(r.Error, "no peer joined within 500ms") {
		t.Errorf("round line %q: %+v (%v)", line, r, err)
	}
}
