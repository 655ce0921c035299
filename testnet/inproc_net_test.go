package testnet

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/pion/transport/v4"
)

func isClosed(err error) bool { return errors.Is(err, net.ErrClosed) }

func TestInProcessNetBind(t *testing.T) {
	lab := startLab(t, oneSite(presetNAT(t, "full-cone")))
	host, server := lab.Site("a").Host, lab.Server

	c := listen(t, host)
	la := addrPort(c.LocalAddr())
	if la.Addr() != host.Addr() || la.Port() < ephemeralMin || la.Port() > ephemeralMax {
		t.Fatalf("0.0.0.0:0 bound to %v, want %v and an ephemeral port", la, host.Addr())
	}
	if host.Addr() != netip.MustParseAddr("10.0.0.2") {
		t.Fatalf("host behind NAT at %v", host.Addr())
	}

	cases := []struct {
		name    string
		net     transport.Net
		first   string
		second  string
		wantErr error
	}{
		{"same port", host.Net, "10.0.0.2:4000", "0.0.0.0:4000", syscall.EADDRINUSE},
		{"wildcard then specific", server.Net, "0.0.0.0:4001", "203.0.113.11:4001", syscall.EADDRINUSE},
		{"specific then wildcard", server.Net, "203.0.113.10:4002", ":4002", syscall.EADDRINUSE},
		{"two addresses one port", server.Net, "203.0.113.10:4003", "203.0.113.11:4003", nil},
		{"foreign address", host.Net, "10.0.0.2:4004", "198.51.100.99:4004", syscall.EADDRNOTAVAIL},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, err := tc.net.ListenPacket("udp4", tc.first)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = a.Close() }()
			b, err := tc.net.ListenPacket("udp", tc.second)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				_ = b.Close()
				return
			}
			if !errors.Is(err, tc.wantErr) {
				if b != nil {
					_ = b.Close()
				}
				t.Fatalf("got %v, want %v", err, tc.wantErr)
			}
		})
	}
	// A closed socket frees its port.
	a, err := host.Net.ListenPacket("udp4", ":4010")
	if err != nil {
		t.Fatal(err)
	}
	_ = a.Close()
	if b, err := host.Net.ListenPacket("udp4", ":4010"); err != nil {
		t.Fatalf("rebind after close: %v", err)
	} else {
		_ = b.Close()
	}
}

func TestInProcessNetDeadlines(t *testing.T) {
	lab := startLab(t, oneSite(presetNAT(t, "full-cone")))
	c := listen(t, lab.Site("a").Host)
	buf := make([]byte, 10)

	const wait = 50 * time.Millisecond
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(wait))
	if _, _, err := c.ReadFrom(buf); !isTimeout(err) {
		t.Fatalf("want a timeout, got %v", err)
	}
	if el := time.Since(start); el < wait {
		t.Fatalf("timed out after %v, before the %v deadline", el, wait)
	}

	// Moving the deadline wakes a blocked reader.
	_ = c.SetReadDeadline(time.Time{})
	errc := make(chan error, 1)
	go func() { _, _, err := c.ReadFrom(buf); errc <- err }()
	time.Sleep(20 * time.Millisecond)
	_ = c.SetReadDeadline(time.Now().Add(-time.Second))
	select {
	case err := <-errc:
		if !isTimeout(err) {
			t.Fatalf("want a timeout, got %v", err)
		}
	case <-time.After(replyWait):
		t.Fatal("a past deadline did not wake the reader")
	}

	// A past write deadline fails writes too.
	_ = c.SetWriteDeadline(time.Now().Add(-time.Second))
	if _, err := c.WriteTo([]byte("x"), net.UDPAddrFromAddrPort(echoEndpoint(0))); !isTimeout(err) {
		t.Fatalf("write past deadline: %v", err)
	}
	_ = c.SetDeadline(time.Time{})

	// Close wakes a blocked reader with net.ErrClosed, and later calls fail.
	go func() { _, _, err := c.ReadFrom(buf); errc <- err }()
	time.Sleep(20 * time.Millisecond)
	_ = c.Close()
	if err := <-errc; !isClosed(err) {
		t.Fatalf("read after Close: %v", err)
	}
	if _, err := c.WriteTo([]byte("x"), net.UDPAddrFromAddrPort(echoEndpoint(0))); !isClosed(err) {
		t.Fatalf("write after Close: %v", err)
	}
	if err := c.Close(); !isClosed(err) {
		t.Fatalf("second Close: %v", err)
	}
}

func TestInProcessNetReceiveBuffer(t *testing.T) {
	lab := startLab(t, oneSite(presetNAT(t, "open")))
	const payload, fits = 100, 4
	rc, err := lab.Server.Net.ListenUDP("udp4", &net.UDPAddr{IP: ServerAddrs[0].AsSlice(), Port: 5000})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rc.Close() }()
	if err := rc.SetReadBuffer(fits * (payload + perPacketOverhead)); err != nil {
		t.Fatal(err)
	}
	c := listen(t, lab.Site("a").Host)
	for range 10 {
		if _, err := c.WriteTo(make([]byte, payload), rc.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	got := 0
	_ = rc.SetReadDeadline(time.Now().Add(silenceWait))
	buf := make([]byte, 2*payload)
	for {
		n, _, err := rc.ReadFromUDP(buf)
		if err != nil {
			break
		}
		if n != payload {
			t.Fatalf("read %d bytes, want %d", n, payload)
		}
		got++
	}
	if got != fits || rc.(*vconn).Dropped() != 10-fits {
		t.Fatalf("received %d, dropped %d; want %d and %d", got, rc.(*vconn).Dropped(), fits, 10-fits)
	}
}

// A connected socket only hears its peer; Write and Read work on it.
func TestInProcessNetConnected(t *testing.T) {
	lab := startLab(t, oneSite(presetNAT(t, "open")))
	srv := listenServer(t, lab)
	other := listenServer(t, lab)
	conn, err := lab.Site("a").Host.Net.DialUDP("udp4", nil, srv.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	if conn.RemoteAddr().String() != srv.LocalAddr().String() || addrPort(conn.LocalAddr()).Addr() != lab.Site("a").Host.Addr() {
		t.Fatalf("connected %v → %v", conn.LocalAddr(), conn.RemoteAddr())
	}
	if _, err := conn.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	_ = srv.SetReadDeadline(time.Now().Add(replyWait))
	buf := make([]byte, 10)
	_, from, err := srv.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = other.WriteTo([]byte("stranger"), from)
	_, _ = srv.WriteTo([]byte("peer"), from)
	_ = conn.SetReadDeadline(time.Now().Add(replyWait))
	n, err := conn.Read(buf)
	if err != nil || string(buf[:n]) != "peer" {
		t.Fatalf("connected read: %q, %v", buf[:n], err)
	}
	if _, err := conn.WriteTo([]byte("x"), from); !errors.Is(err, net.ErrWriteToConnected) {
		t.Fatalf("WriteTo on a connected socket: %v", err)
	}
	if c, ok := conn.(*vconn); !ok || c.RemoteAddr() == nil {
		t.Fatal("connected socket without remote")
	}
	if u := listenServer(t, lab); u.(*vconn).RemoteAddr() != nil {
		t.Fatal("unconnected RemoteAddr must be an untyped nil")
	}
}

func TestInProcessNetAPI(t *testing.T) {
	lab := startLab(t, oneSite(presetNAT(t, "full-cone")))
	n := lab.Site("a").Host.Net

	for name, err := range map[string]error{
		"ListenTCP":      second(n.ListenTCP("tcp", nil)),
		"DialTCP":        second(n.DialTCP("tcp", nil, &net.TCPAddr{})),
		"ResolveTCPAddr": second(n.ResolveTCPAddr("tcp", "1.2.3.4:5")),
		"Dial tcp":       second(n.Dial("tcp", "203.0.113.10:80")),
		"Dialer tcp":     second(n.CreateDialer(&net.Dialer{}).Dial("tcp", "203.0.113.10:80")),
		"Listen":         second(n.CreateListenConfig(&net.ListenConfig{}).Listen(context.Background(), "tcp", ":80")),
		"ListenPacket6":  second(n.ListenPacket("udp6", "[::]:0")),
		"no DNS":         second(n.ResolveUDPAddr("udp", "stun.example.com:3478")),
	} {
		if !errors.Is(err, ErrNotSupported) {
			t.Errorf("%s: %v, want ErrNotSupported", name, err)
		}
	}

	ua, err := n.ResolveUDPAddr("udp4", "203.0.113.11:3479")
	if err != nil || ua.String() != "203.0.113.11:3479" {
		t.Fatalf("ResolveUDPAddr: %v, %v", ua, err)
	}
	ia, err := n.ResolveIPAddr("ip4", "203.0.113.11")
	if err != nil || ia.String() != "203.0.113.11" {
		t.Fatalf("ResolveIPAddr: %v, %v", ia, err)
	}

	ifs, err := n.Interfaces()
	if err != nil || len(ifs) != 2 || ifs[0].Name != "lo" || ifs[1].Name != "eth0" {
		t.Fatalf("Interfaces: %v, %v", ifs, err)
	}
	eth, err := n.InterfaceByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := eth.Addrs()
	if err != nil || len(addrs) != 1 || addrs[0].(*net.IPNet).IP.String() != "10.0.0.2" {
		t.Fatalf("eth0 addresses %v, %v", addrs, err)
	}
	if i, err := n.InterfaceByIndex(1); err != nil || i.Name != "lo" {
		t.Fatalf("InterfaceByIndex(1): %v, %v", i, err)
	}
	if _, err := n.InterfaceByName("wlan0"); !errors.Is(err, transport.ErrInterfaceNotFound) {
		t.Fatalf("unknown interface: %v", err)
	}
	if srvIfs, _ := lab.Server.Net.InterfaceByName("eth0"); srvIfs == nil {
		t.Fatal("server has no eth0")
	} else if a, _ := srvIfs.Addrs(); len(a) != 2 {
		t.Fatalf("server eth0 has %v, want both addresses", a)
	}

	// Dialer and ListenConfig open working UDP sockets.
	d := n.CreateDialer(&net.Dialer{LocalAddr: &net.UDPAddr{Port: 4500}})
	dc, err := d.Dial("udp", "203.0.113.10:3478")
	if err != nil || addrPort(dc.LocalAddr()) != netip.MustParseAddrPort("10.0.0.2:4500") {
		t.Fatalf("Dialer: %v, %v", dc, err)
	}
	_ = dc.Close()
	lc := n.CreateListenConfig(&net.ListenConfig{})
	pc, err := lc.ListenPacket(context.Background(), "udp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	_ = pc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := lc.ListenPacket(ctx, "udp4", ":0"); !errors.Is(err, context.Canceled) {
		t.Fatalf("ListenPacket with a cancelled context: %v", err)
	}

	// Sending to the host's own address stays on the host.
	a, b := listen(t, lab.Site("a").Host), listen(t, lab.Site("a").Host)
	if _, err := a.WriteTo([]byte("self"), b.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	_ = b.SetReadDeadline(time.Now().Add(replyWait))
	if _, from, err := b.ReadFrom(make([]byte, 10)); err != nil || from.String() != a.LocalAddr().String() {
		t.Fatalf("local delivery: from %v, %v", from, err)
	}
	if v := lab.NATs("a")[0]; v.Stats.Out != 0 {
		t.Fatalf("local traffic crossed the NAT: %+v", v.Stats)
	}
}

func second[T any](_ T, err error) error { return err }

func TestInProcessStartErrors(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Start(ctx, oneSite(NAT{}), InProcess); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled start: %v", err)
	}
	if _, err := Start(context.Background(), oneSite(NAT{Mapping: "endpoint-independent", Step: -1}), InProcess); err == nil {
		t.Fatal("negative step accepted")
	}
}

// ReadMsgUDP flags truncation; WriteMsgUDP sends on both kinds of socket.
func TestInProcessNetMsg(t *testing.T) {
	lab := startLab(t, oneSite(presetNAT(t, "open")))
	host := lab.Site("a").Host.Net
	rc, err := lab.Server.Net.ListenUDP("udp4", &net.UDPAddr{IP: ServerAddrs[0].AsSlice()})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rc.Close() }()
	uc, err := host.ListenUDP("udp4", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = uc.Close() }()
	dst := rc.LocalAddr().(*net.UDPAddr)
	if n, oobn, err := uc.WriteMsgUDP([]byte("0123456789"), nil, dst); err != nil || n != 10 || oobn != 0 {
		t.Fatalf("WriteMsgUDP: %d %d %v", n, oobn, err)
	}
	dc, err := host.DialUDP("udp4", nil, dst)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = dc.Close() }()
	if _, _, err := dc.WriteMsgUDP([]byte("abc"), nil, nil); err != nil {
		t.Fatalf("connected WriteMsgUDP: %v", err)
	}
	if _, _, err := dc.WriteMsgUDP([]byte("abc"), nil, dst); !errors.Is(err, net.ErrWriteToConnected) {
		t.Fatalf("connected WriteMsgUDP with an address: %v", err)
	}
	_ = rc.SetReadDeadline(time.Now().Add(replyWait))
	buf := make([]byte, 4)
	n, _, flags, from, err := rc.ReadMsgUDP(buf, nil)
	if err != nil || n != 4 || flags&msgTrunc == 0 || from.String() != uc.LocalAddr().String() {
		t.Fatalf("ReadMsgUDP: n=%d flags=%#x from=%v err=%v", n, flags, from, err)
	}
	n, _, flags, from, err = rc.ReadMsgUDP(buf, nil)
	if err != nil || n != 3 || flags != 0 || from.String() != dc.LocalAddr().String() {
		t.Fatalf("ReadMsgUDP: n=%d flags=%#x from=%v err=%v", n, flags, from, err)
	}
	if _, err := uc.Write([]byte("x")); !errors.Is(err, syscall.EDESTADDRREQ) {
		t.Fatalf("Write on an unconnected socket: %v", err)
	}
	if _, err := uc.WriteToUDP(make([]byte, maxUDPPayload+1), dst); !errors.Is(err, syscall.EMSGSIZE) {
		t.Fatalf("oversized datagram: %v", err)
	}
}
