//go:build linux

package server_test

import (
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"github.com/natlab/natlab/server"
)

const emfileChild = "NATLAB_TEST_EMFILE_CHILD"

// Vulnerability 3 of issue 11: when file descriptors ran out once
// (EMFILE), pion/turn's accept loop returned and TURN over TLS never
// accepted again. The test runs in a child process, whose descriptor
// limit it can lower without starving other tests.
func TestAcceptSurvivesEMFILE(t *testing.T) {
	if os.Getenv(emfileChild) == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestAcceptSurvivesEMFILE$", "-test.v")
		cmd.Env = append(os.Environ(), emfileChild+"=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("child: %v\n%s", err, out)
		}
		return
	}
	srv := startTURN(t, func(tc *server.TURNConfig) {
		cert, err := server.SelfSignedCert("natlab", nil)
		if err != nil {
			t.Fatal(err)
		}
		tc.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		tc.TLSAddr = netip.MustParseAddrPort("127.0.0.1:0")
	})
	tlsAddr, _ := srv.TURNTLSAddr()
	targets := []netip.AddrPort{tlsAddr, srv.Addrs().Primary}
	// The client sockets exist before the descriptors run out; their
	// connects complete in the kernel, and the server's accepts fail.
	fds := make([]int, len(targets))
	for i := range fds {
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		fds[i] = fd
	}
	fillers := exhaustFDs(t)
	for i, ap := range targets {
		if err := syscall.Connect(fds[i], &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}); err != nil {
			t.Fatalf("connect %s: %v", ap, err)
		}
	}
	time.Sleep(300 * time.Millisecond) // the accept loops meet EMFILE
	for _, f := range fillers {
		_ = f.Close()
	}
	conns := make([]net.Conn, len(fds))
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "client")
		c, err := net.FileConn(f)
		_ = f.Close()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns[i] = c
	}
	tc := tls.Client(conns[0], &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // a test against a self-signed server
	_ = tc.SetDeadline(time.Now().Add(turnTestTimeout))
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TURN over TLS after EMFILE: %v", err)
	}
	alloc := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), turnTransportUDP)
	s := &turnStream{t: t, c: tc}
	s.send(alloc.Raw)
	if res := s.read(); res.Type.Class != stun.ClassErrorResponse {
		t.Errorf("TLS allocate: %v", res)
	}
	s = &turnStream{t: t, c: conns[1]}
	s.send(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw)
	if res := s.read(); res.Type != stun.BindingSuccess {
		t.Errorf("TCP binding: %v", res)
	}
}

// exhaustFDs lowers the descriptor limit and opens files until none is
// left; closing the returned files gives them back.
func exhaustFDs(t *testing.T) []*os.File {
	t.Helper()
	lim := syscall.Rlimit{Cur: 256, Max: 1 << 20}
	var cur syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &cur); err == nil {
		lim.Max = cur.Max
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	var files []*os.File
	for range 1024 {
		f, err := os.Open(os.DevNull)
		if errors.Is(err, syscall.EMFILE) {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	t.Fatal("descriptors did not run out")
	return nil
}
