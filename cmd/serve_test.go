package cmd

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/natlab/natlab/internal/interop"
	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/server"
)

// serveTimeout bounds waiting for `natlab serve` to start or stop: both
// take milliseconds on loopback.
const serveTimeout = 5 * time.Second

// runServeInProcess starts `natlab serve` with args and returns its address
// plan once it listens; the server stops at the end of the test.
func runServeInProcess(t *testing.T, args ...string) (server.Addrs, string) {
	t.Helper()
	s, out, _ := testStreams()
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
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(serveTimeout):
			t.Error("serve did not stop")
		}
	})
	select {
	case a := <-ready:
		return a, out.String()
	case err := <-done:
		t.Fatalf("serve exited: %v", err)
	case <-time.After(serveTimeout):
		t.Fatal("serve did not start")
	}
	return server.Addrs{}, ""
}

func TestServeWithStunClient(t *testing.T) {
	interop.Need(t, interop.StunClientBin)
	interop.NeedLoopback2(t)
	p := interop.FreePortPair(t)
	a, _ := runServeInProcess(t, "--listen", fmt.Sprintf("127.0.0.1:%d", p), "--alt-ip", "127.0.0.2")
	if a.AltPort != p+1 {
		t.Fatalf("alt port %d, want the default %d", a.AltPort, p+1)
	}
	code, out := interop.StunClient(t, a.Primary)
	// stun-client exits with its NAT type code: 1 is "Open" (no NAT).
	if code != 1 || !strings.Contains(out, "Primary: Open") {
		t.Errorf("stun client: exit %d, output:\n%s", code, out)
	}
}

func TestServeWithNATDiscovery(t *testing.T) {
	interop.Need(t, interop.NATDiscoveryBin)
	interop.NeedLoopback2(t)
	p := interop.FreePortPair(t)
	a, _ := runServeInProcess(t, "--listen", fmt.Sprintf("127.0.0.1:%d", p), "--alt-ip", "127.0.0.2", "--alt-port", fmt.Sprint(p+1))
	m, f, out := interop.NATDiscovery(t, a.Primary)
	if m != natclass.EndpointIndependent || f != natclass.EndpointIndependent {
		t.Errorf("natdiscovery says %q/%q, want endpoint-independent for both on loopback:\n%s", m, f, out)
	}
	if strings.Contains(out, "not supported") || strings.Contains(out, "rror") {
		t.Errorf("natdiscovery complained:\n%s", out)
	}
}

func TestServeJSONStatus(t *testing.T) {
	interop.NeedLoopback2(t)
	_, out := runServeInProcess(t, "--listen", "127.0.0.1:0", "--json")
	var st serveStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil || strings.Count(out, "\n") != 1 {
		t.Fatalf("want one JSON line, got %q (%v)", out, err)
	}
	if st.Schema != "natlab.serve/v1" || st.RFC5780 || len(st.Unsupported) == 0 || st.TCP == "" || len(st.Listening) != 1 {
		t.Errorf("status %+v", st)
	}
}

func TestServeFlags(t *testing.T) {
	tests := []struct {
		args    []string
		wantErr string
		want    server.Addrs
	}{
		{[]string{"--listen", "127.0.0.1:3478"}, "", server.Addrs{Primary: netip.MustParseAddrPort("127.0.0.1:3478")}},
		{[]string{"--listen", "127.0.0.1:3478", "--alt-ip", "127.0.0.2"}, "",
			server.Addrs{Primary: netip.MustParseAddrPort("127.0.0.1:3478"), AltIP: netip.MustParseAddr("127.0.0.2"), AltPort: 3479}},
		{[]string{"--listen", "127.0.0.1:3478", "--alt-ip", "127.0.0.2", "--alt-port", "4000"}, "",
			server.Addrs{Primary: netip.MustParseAddrPort("127.0.0.1:3478"), AltIP: netip.MustParseAddr("127.0.0.2"), AltPort: 4000}},
		{nil, "--listen IP:PORT is required", server.Addrs{}},
		{[]string{"--listen", "localhost:3478"}, "literal IP", server.Addrs{}},
		{[]string{"--listen", "127.0.0.1:3478", "--alt-ip", "127.0.0.1"}, "must differ", server.Addrs{}},
		{[]string{"--listen", "127.0.0.1:3478", "--alt-ip", "::1"}, "same family", server.Addrs{}},
		{[]string{"--listen", "127.0.0.1:3478", "--alt-port", "3478"}, "must differ", server.Addrs{}},
		{[]string{"--listen", "127.0.0.1:3478", "--alt-port", "70000"}, "invalid argument", server.Addrs{}},
	}
	for _, tt := range tests {
		s, _, _ := testStreams()
		var got server.Addrs
		c := NewCmdServe(s, func(_ context.Context, o *ServeOptions) error {
			var err error
			got, err = parseServeAddrs(o)
			return err
		})
		c.SetArgs(tt.args)
		c.SetOut(s.Out)
		c.SetErr(s.ErrOut)
		c.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &FlagError{err} })
		err := c.Execute()
		if tt.wantErr == "" {
			if err != nil || got != tt.want {
				t.Errorf("%v: %v %+v, want %+v", tt.args, err, got, tt.want)
			}
			continue
		}
		var fe *FlagError
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !asFlagError(err, &fe) {
			t.Errorf("%v: err %v, want a flag error containing %q", tt.args, err, tt.wantErr)
		}
	}
}
