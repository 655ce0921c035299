package testnet

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"github.com/natlab/natlab/internal/leakcheck"
)

func TestInProcessDelay(t *testing.T) {
	const wanDelay, serverDelay = 20 * time.Millisecond, 5 * time.Millisecond
	const minRTT = 2 * (wanDelay + serverDelay)
	// maxRTT is loose: timers under -race on two shared cores run late.
	const maxRTT = minRTT + 200*time.Millisecond
	topo := Topology{
		Sites:      []SiteSpec{{Name: "a", NAT: presetNAT(t, "full-cone"), WAN: Link{Delay: wanDelay}}},
		ServerLink: Link{Delay: serverDelay},
	}
	lab := startLab(t, topo)
	startEcho(t, lab)
	c := listen(t, lab.Site("a").Host)
	for range 3 {
		start := time.Now()
		ask(t, c, echoEndpoint(0))
		if rtt := time.Since(start); rtt < minRTT || rtt > maxRTT {
			t.Fatalf("RTT %v, want within [%v, %v]", rtt, minRTT, maxRTT)
		}
	}
}

// A burst through a delayed link arrives complete and in order.
func TestInProcessDelayKeepsOrder(t *testing.T) {
	const burst = 500
	topo := Topology{Sites: []SiteSpec{{Name: "a", NAT: presetNAT(t, "full-cone"), WAN: Link{Delay: 10 * time.Millisecond}}}}
	lab := startLab(t, topo)
	sink := listenServer(t, lab)
	c := listen(t, lab.Site("a").Host)
	for i := range burst {
		if _, err := c.WriteTo(binary.BigEndian.AppendUint32(nil, uint32(i)), sink.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	_ = sink.SetReadDeadline(time.Now().Add(replyWait))
	buf := make([]byte, 4)
	for i := range burst {
		n, _, err := sink.ReadFrom(buf)
		if err != nil || n != 4 {
			t.Fatalf("packet %d: %v", i, err)
		}
		if got := binary.BigEndian.Uint32(buf); got != uint32(i) {
			t.Fatalf("packet %d arrived as number %d", i, got)
		}
	}
}

// lossRun sends n packets from site a to the server and counts arrivals.
func lossRun(t *testing.T, loss float64, n int) int {
	topo := Topology{Sites: []SiteSpec{{Name: "a", NAT: presetNAT(t, "full-cone"), WAN: Link{Loss: loss}}}}
	lab := startLab(t, topo)
	sink := listenServer(t, lab)
	c := listen(t, lab.Site("a").Host)
	for range n {
		if _, err := c.WriteTo([]byte("x"), sink.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	// Without delay, delivery is synchronous: everything that survived is
	// already queued (the buffer holds all n).
	got := 0
	_ = sink.SetReadDeadline(time.Now().Add(silenceWait))
	for {
		if _, _, err := sink.ReadFrom(make([]byte, 1)); err != nil {
			break
		}
		got++
	}
	return got
}

func TestInProcessLoss(t *testing.T) {
	const packets = 600 // fits the default receive buffer
	for _, loss := range []float64{0.1, 0.3} {
		got := lossRun(t, loss, packets)
		rate := 1 - float64(got)/packets
		// Loose bounds: about ±5 standard deviations at these sizes.
		if rate < loss-0.1 || rate > loss+0.1 {
			t.Errorf("loss %.2f: measured %.3f (%d of %d arrived)", loss, rate, got, packets)
		}
		// The seeded RNG repeats a lab's losses exactly.
		if again := lossRun(t, loss, packets); again != got {
			t.Errorf("loss %.2f: %d then %d arrivals; want the same with the same seed", loss, got, again)
		}
	}
}

// A pion/stun client gets its XOR-MAPPED-ADDRESS through a NAT.
func TestInProcessPionSTUN(t *testing.T) {
	leakcheck.Check(t)
	lab := startLab(t, oneSite(presetNAT(t, "symmetric-sequential")))
	srv, err := lab.Server.Net.ListenPacket("udp4", netip.AddrPortFrom(ServerAddrs[0], 3478).String())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		serveSTUN(srv)
	}()
	t.Cleanup(func() { _ = srv.Close(); <-done })

	conn, err := lab.Site("a").Host.Net.Dial("udp4", "203.0.113.10:3478")
	if err != nil {
		t.Fatal(err)
	}
	client, err := stun.NewClient(conn)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = client.Close() }()
	var xor stun.XORMappedAddress
	var doErr error
	err = client.Do(stun.MustBuild(stun.TransactionID, stun.BindingRequest), func(ev stun.Event) {
		if doErr = ev.Error; doErr == nil {
			doErr = xor.GetFrom(ev.Message)
		}
	})
	if err != nil || doErr != nil {
		t.Fatalf("binding: %v, %v", err, doErr)
	}
	views := lab.NATs("a")
	if len(views[0].Mappings) != 1 {
		t.Fatalf("want one mapping: %+v", views)
	}
	want := views[0].Mappings[0].External
	if got := netip.AddrPortFrom(netip.AddrFrom4([4]byte(xor.IP.To4())), uint16(xor.Port)); got != want {
		t.Fatalf("XOR-MAPPED-ADDRESS %v, want the NAT's mapping %v", got, want)
	}
}

// serveSTUN answers Binding requests with the observed source.
func serveSTUN(c net.PacketConn) {
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return
		}
		req := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
		if req.Decode() != nil || req.Type != stun.BindingRequest {
			continue
		}
		ua := from.(*net.UDPAddr)
		resp, err := stun.Build(req, stun.BindingSuccess, &stun.XORMappedAddress{IP: ua.IP, Port: ua.Port}, stun.Fingerprint)
		if err != nil {
			continue
		}
		_, _ = c.WriteTo(resp.Raw, from)
	}
}

// Closing a lab with traffic in flight on delayed links stops every
// goroutine and socket it started.
func TestInProcessCloseNoLeak(t *testing.T) {
	leakcheck.Check(t)
	topo, err := PairTopology("full-cone", "double-nat")
	if err != nil {
		t.Fatal(err)
	}
	for i := range topo.Sites {
		topo.Sites[i].WAN = Link{Delay: 30 * time.Millisecond, Loss: 0.01}
	}
	topo.ServerLink = Link{Delay: 5 * time.Millisecond}
	lab := startLab(t, topo)
	startEcho(t, lab)
	c := listen(t, lab.Site("b").Host)
	ask(t, c, echoEndpoint(0))
	// Leave packets in flight, and a reader blocked, when the lab closes.
	for i := range 4 {
		_, _ = c.WriteTo([]byte("echo"), net.UDPAddrFromAddrPort(echoEndpoint(i)))
	}
	readErr := make(chan error, 1)
	blocked := listen(t, lab.Site("a").Host)
	go func() {
		_, _, err := blocked.ReadFrom(make([]byte, 10))
		readErr <- err
	}()
	if err := lab.Close(); err != nil {
		t.Fatal(err)
	}
	if err := lab.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	select {
	case err := <-readErr:
		if !isClosed(err) {
			t.Fatalf("blocked read ended with %v, want net.ErrClosed", err)
		}
	case <-time.After(replyWait):
		t.Fatal("Close did not unblock a reader")
	}
	if _, err := lab.Site("a").Host.Net.ListenPacket("udp4", ":0"); err == nil {
		t.Fatal("a closed lab still opens sockets")
	}
}

// Senders on several sockets and a Close racing with them: no panic, no
// race report, no leak, and every sender ends.
func TestInProcessConcurrentClose(t *testing.T) {
	leakcheck.Check(t)
	topo, err := PairTopology("symmetric", "restricted-cone")
	if err != nil {
		t.Fatal(err)
	}
	topo.Sites[0].WAN = Link{Delay: time.Millisecond, Loss: 0.05}
	lab := startLab(t, topo)
	startEcho(t, lab)
	const senders = 4
	errc := make(chan error, senders)
	for i := range senders {
		c := listen(t, lab.Sites[i%2].Host)
		go func() {
			for j := 0; ; j++ {
				if _, err := c.WriteTo([]byte("echo"), net.UDPAddrFromAddrPort(echoEndpoint(j%4))); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	_ = lab.Close()
	for range senders {
		if err := <-errc; !isClosed(err) {
			t.Errorf("sender ended with %v, want net.ErrClosed", err)
		}
	}
}
