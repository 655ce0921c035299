//go:build linux

package testnet

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"syscall"

	"testing"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// TestKernelSegmentHops checks what lies between a site's router and the
// server: on the routed topology a packet that leaves the router with
// TTL 1 expires at the internet router; on the shared segment it is
// delivered, because nothing lies between.
func TestKernelSegmentHops(t *testing.T) {
	for _, seg := range Segments() {
		t.Run(string(seg), func(t *testing.T) {
			top, err := PairTopology("full-cone", "port-restricted-cone")
			if err != nil {
				t.Fatal(err)
			}
			top.Segment = seg
			lab := kernStartLab(t, top)
			echo := kernStartEcho(t, lab.Server)
			c := kernListen(t, lab.Site("a").Host.Net)
			// TTL 2: one hop to the router, then one more.
			if err := ipv4.NewPacketConn(c).SetTTL(2); err != nil {
				t.Fatal(err)
			}
			_, got := kernAsk(t, c, echo.addrs[0], 0, 0, kernNegativeWait, 2)
			if want := seg == Shared; got != want {
				t.Errorf("a packet with TTL 2 reached the server: %v, want %v", got, want)
			}
			// Full TTL, both sites reach the server and each other's
			// router on either topology.
			c2 := kernListen(t, lab.Site("b").Host.Net)
			if _, ok := kernAsk(t, c2, echo.addrs[3], 3, 0, kernReplyWait, kernReplyTries); !ok {
				t.Fatal("site b: no reply from the server")
			}
		})
	}
}

// TestKernelSharedRejectsDelay checks that the shared segment refuses link
// delay (its delay lines are point-to-point) with ErrNotSupported, and the
// in-process backend refuses the shared segment.
func TestKernelSharedRejectsDelay(t *testing.T) {
	top, err := PairTopology("full-cone", "")
	if err != nil {
		t.Fatal(err)
	}
	top.Segment = Shared
	if _, err := Start(context.Background(), top, InProcess); !errors.Is(err, ErrNotSupported) {
		t.Errorf("in-process shared segment: err %v, want ErrNotSupported", err)
	}
	top.Sites[0].WAN.Delay = 10 * time.Millisecond
	if _, err := Start(context.Background(), top, Kernel); !errors.Is(err, ErrNotSupported) {
		t.Errorf("kernel shared segment with delay: err %v, want ErrNotSupported", err)
	}
	top.Segment = "star"
	if _, err := Start(context.Background(), top, Kernel); err == nil {
		t.Error("unknown segment accepted")
	}
}

// TestKernelTCPOfItsOwn checks presets whose TCP differs from their UDP:
// an unsolicited SYN from the server's other address to the host's TCP
// mapping is admitted only where TCP is full cone too, and TCP source
// ports are randomised where the UDP rule alone keeps them.
func TestKernelTCPOfItsOwn(t *testing.T) {
	for _, tc := range []struct {
		preset      string
		admit, keep bool
	}{
		{"full-cone", true, true},
		{"fullcone-udp", false, true},
		{"restricted-cone-udp", false, true},
		{"static-port-udp", false, false},
	} {
		t.Run(tc.preset, func(t *testing.T) {
			top, err := PairTopology(tc.preset, "")
			if err != nil {
				t.Fatal(err)
			}
			lab := kernStartLab(t, top)
			host := lab.Site("a").Host
			srv := netip.AddrPortFrom(ServerAddrs[0], 8080)
			kernTCPEcho(t, lab.Server, srv)
			ln, err := host.Net.CreateListenConfig(&net.ListenConfig{Control: kernReuse}).Listen(context.Background(), "tcp4", "0.0.0.0:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			local := ln.Addr().(*net.TCPAddr).AddrPort()
			d := host.Net.CreateDialer(&net.Dialer{Timeout: 5 * time.Second, LocalAddr: net.TCPAddrFromAddrPort(local), Control: kernReuse})
			c, err := d.Dial("tcp4", srv.String())
			if err != nil {
				t.Fatalf("dial the server from %v: %v", local, err)
			}
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			line, err := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if err != nil {
				t.Fatal(err)
			}
			mapped, err := netip.ParseAddrPort(strings.TrimSpace(line))
			if err != nil {
				t.Fatal(err)
			}
			if keep := mapped.Port() == local.Port(); keep != tc.keep {
				t.Errorf("TCP mapping %v of local port %d: port kept %v, want %v", mapped, local.Port(), keep, tc.keep)
			}
			// The server's other address knocks on the mapping.
			sd := lab.Server.Net.CreateDialer(&net.Dialer{Timeout: kernNegativeWait, LocalAddr: &net.TCPAddr{IP: ServerAddrs[1].AsSlice()}})
			in, err := sd.Dial("tcp4", mapped.String())
			if in != nil {
				in.Close()
			}
			if admitted := err == nil; admitted != tc.admit {
				t.Errorf("unsolicited SYN from %v to %v: admitted %v (%v), want %v", ServerAddrs[1], mapped, admitted, err, tc.admit)
			}
		})
	}
}

// kernReuse lets a connect share the listener's port (TCP simultaneous
// open's socket sharing).
func kernReuse(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); serr == nil {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}
	})
	if err != nil {
		return err
	}
	return serr
}
