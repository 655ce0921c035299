package testnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// replyWait bounds how long a test waits for a reply that should come; the
// lab delivers in microseconds without shaping, so this only guards hangs.
const replyWait = 2 * time.Second

// silenceWait is how long a test waits before concluding that a packet was
// dropped. Unshaped delivery is synchronous, so anything that will arrive
// has arrived long before this.
const silenceWait = 100 * time.Millisecond

// Echo endpoints on the server: index 0 is the primary one the client
// talks to; 1 changes the port, 2 the address, 3 both (RFC 5780 layout).
var echoPorts = [2]uint16{3478, 3479}

func echoEndpoint(i int) netip.AddrPort {
	return netip.AddrPortFrom(ServerAddrs[i/2], echoPorts[i%2])
}

// echoServer answers on the four endpoints. "echo" is answered with
// "addr=<observed source>" from the same socket; "from k" sends that answer
// from endpoint k and then "ack" from the receiving socket, so a client
// that sees the ack knows whether the other reply got through.
type echoServer struct {
	conns [4]net.PacketConn
	wg    sync.WaitGroup
}

func startEcho(t testing.TB, lab *Lab) *echoServer {
	t.Helper()
	s := &echoServer{}
	for i := range s.conns {
		c, err := lab.Server.Net.ListenPacket("udp4", echoEndpoint(i).String())
		if err != nil {
			t.Fatalf("echo listen %v: %v", echoEndpoint(i), err)
		}
		s.conns[i] = c
	}
	for i := range s.conns {
		s.wg.Add(1)
		go s.serve(i)
	}
	// Cleanups run before the lab's Close (last in, first out), so close
	// the sockets here to end the loops.
	t.Cleanup(func() {
		for _, c := range s.conns {
			_ = c.Close()
		}
		s.wg.Wait()
	})
	return s
}

func (s *echoServer) serve(i int) {
	defer s.wg.Done()
	c := s.conns[i]
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return
		}
		reply := []byte("addr=" + from.String())
		req := string(buf[:n])
		switch {
		case req == "echo":
			_, _ = c.WriteTo(reply, from)
		case strings.HasPrefix(req, "from "):
			k, err := strconv.Atoi(strings.TrimPrefix(req, "from "))
			if err != nil || k < 0 || k > 3 {
				continue
			}
			_, _ = s.conns[k].WriteTo(reply, from)
			_, _ = c.WriteTo([]byte("ack"), from)
		}
	}
}

func startLab(t testing.TB, topo Topology) *Lab {
	t.Helper()
	lab, err := Start(context.Background(), topo, InProcess)
	if err != nil {
		t.Fatalf("start lab: %v", err)
	}
	t.Cleanup(func() { _ = lab.Close() })
	return lab
}

func oneSite(n NAT) Topology {
	return Topology{Sites: []SiteSpec{{Name: "a", NAT: n}}}
}

func presetNAT(t testing.TB, name string) NAT {
	t.Helper()
	n, err := Preset(name)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func listen(t testing.TB, h *Host) net.PacketConn {
	t.Helper()
	c, err := h.Net.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		t.Fatalf("listen on %s: %v", h.Name, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// listenServer opens a socket on the server's primary address: a wildcard
// socket there reports 0.0.0.0 like a multi-homed kernel host does, which
// a peer cannot send to.
func listenServer(t testing.TB, lab *Lab) net.PacketConn {
	t.Helper()
	c, err := lab.Server.Net.ListenPacket("udp4", netip.AddrPortFrom(ServerAddrs[0], 0).String())
	if err != nil {
		t.Fatalf("listen on server: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func addrPort(a net.Addr) netip.AddrPort {
	return a.(*net.UDPAddr).AddrPort()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() && errors.Is(err, os.ErrDeadlineExceeded)
}

// ask sends "echo" to dst and returns the source the server observed.
func ask(t testing.TB, c net.PacketConn, dst netip.AddrPort) netip.AddrPort {
	t.Helper()
	m, err := tryAsk(c, dst, replyWait)
	if err != nil {
		t.Fatalf("echo via %v to %v: %v", c.LocalAddr(), dst, err)
	}
	return m
}

func tryAsk(c net.PacketConn, dst netip.AddrPort, wait time.Duration) (netip.AddrPort, error) {
	if _, err := c.WriteTo([]byte("echo"), net.UDPAddrFromAddrPort(dst)); err != nil {
		return netip.AddrPort{}, err
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	buf := make([]byte, 1500)
	for {
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			return netip.AddrPort{}, err
		}
		if s, ok := strings.CutPrefix(string(buf[:n]), "addr="); ok {
			return netip.ParseAddrPort(s)
		}
	}
}

// reachable asks endpoint 0 to answer from endpoint k and reports whether
// that answer got through before the ack.
func reachable(t testing.TB, c net.PacketConn, k int) bool {
	t.Helper()
	if _, err := c.WriteTo(fmt.Appendf(nil, "from %d", k), net.UDPAddrFromAddrPort(echoEndpoint(0))); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(replyWait))
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	got := false
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			t.Fatalf("waiting for ack: %v", err)
		}
		switch {
		case string(buf[:n]) == "ack":
			return got
		case addrPort(from) == echoEndpoint(k):
			got = true
		}
	}
}

// expectSilence reports whether nothing arrives on c within silenceWait.
func expectSilence(t testing.TB, c net.PacketConn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(silenceWait))
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	buf := make([]byte, 1500)
	n, from, err := c.ReadFrom(buf)
	if err == nil {
		t.Fatalf("unexpected %q from %v", buf[:n], from)
	}
	if !isTimeout(err) {
		t.Fatalf("want a timeout, got %v", err)
	}
}
