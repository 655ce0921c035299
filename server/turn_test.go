package server_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v3"
	"github.com/pion/transport/v4/stdnet"

	"github.com/natlab/natlab/internal/leakcheck"
	"github.com/natlab/natlab/relay"
	"github.com/natlab/natlab/server"
)

// turnTestTimeout bounds one loopback exchange: the server answers in
// microseconds; the slack is for -race on a busy machine.
const turnTestTimeout = 10 * time.Second

// silence is how long a test waits to conclude a relay forwarded nothing:
// a loopback relay forwards in well under a millisecond.
const silence = 500 * time.Millisecond

const user, pass, secret = "alice", "wonderland", "s3cret"

func startTURN(t *testing.T, mod func(*server.TURNConfig)) *server.Server {
	t.Helper()
	n, err := stdnet.NewNet()
	if err != nil {
		t.Fatal(err)
	}
	tc := &server.TURNConfig{Users: map[string]string{user: pass}, Secret: secret}
	if mod != nil {
		mod(tc)
	}
	srv, err := server.Listen(n, server.Config{Addrs: server.Addrs{Primary: netip.MustParseAddrPort("127.0.0.1:0")}, TURN: tc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return srv
}

func allocate(t *testing.T, srv *server.Server, tr relay.Transport, u, p string) (*relay.Allocation, error) {
	t.Helper()
	n, _ := stdnet.NewNet()
	ctx, cancel := context.WithTimeout(context.Background(), turnTestTimeout)
	defer cancel()
	a, err := relay.Allocate(ctx, relay.AllocOptions{Net: n, Server: srv.Addrs().Primary.String(), Transport: tr, Username: u, Password: p})
	if a != nil {
		t.Cleanup(func() { _ = a.Close() })
	}
	return a, err
}

// permittedPair allocates a over trA and b over trB on srv, each with a
// permission for the other's relayed address.
func permittedPair(t *testing.T, srv *server.Server, trA, trB relay.Transport) (a, b *relay.Allocation) {
	t.Helper()
	a, err := allocate(t, srv, trA, user, pass)
	if err != nil {
		t.Fatal(err)
	}
	b, err = allocate(t, srv, trB, user, pass)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), turnTestTimeout)
	defer cancel()
	if err := a.Permit(ctx, b.Relayed); err != nil {
		t.Fatal(err)
	}
	if err := b.Permit(ctx, a.Relayed); err != nil {
		t.Fatal(err)
	}
	return a, b
}

func turnCode(err error) int {
	var te *stun.TurnError
	if errors.As(err, &te) {
		return int(te.ErrorCodeAttr.Code)
	}
	return 0
}

// Binding stays with the RFC 5780 handler on the shared port: natlab's
// SOFTWARE and RESPONSE-ORIGIN come back, not pion/turn's bare answer.
func TestTURNSharesPortWithSTUN(t *testing.T) {
	srv := startTURN(t, nil)
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	res := exchange(t, c, srv.Addrs().Primary, stun.MustBuild(stun.TransactionID, stun.BindingRequest))
	var sw stun.Software
	if err := sw.GetFrom(res); err != nil || sw.String() != server.DefaultSoftware || !res.Contains(stun.AttrResponseOrigin) {
		t.Errorf("binding answered by the wrong handler: %v", res)
	}
}

func exchange(t *testing.T, c net.PacketConn, to netip.AddrPort, req *stun.Message) *stun.Message {
	t.Helper()
	if _, err := c.WriteTo(req.Raw, net.UDPAddrFromAddrPort(to)); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(turnTestTimeout))
	buf := make([]byte, 1500)
	n, _, err := c.ReadFrom(buf)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	res := &stun.Message{Raw: buf[:n]}
	if err := res.Decode(); err != nil {
		t.Fatal(err)
	}
	return res
}

func TestTURNUnauthenticatedRefused(t *testing.T) {
	srv := startTURN(t, nil)
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// REQUESTED-TRANSPORT UDP (17), without credentials.
	req := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest),
		stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}}, stun.Fingerprint)
	res := exchange(t, c, srv.Addrs().Primary, req)
	var code stun.ErrorCodeAttribute
	if err := code.GetFrom(res); err != nil || code.Code != stun.CodeUnauthorized || !res.Contains(stun.AttrNonce) || !res.Contains(stun.AttrRealm) {
		t.Fatalf("want 401 with NONCE and REALM, got %v (%v)", res, code)
	}
	if st, _ := srv.TURNStats(); st.Allocations != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestTURNWrongPasswordRefused(t *testing.T) {
	srv := startTURN(t, nil)
	for _, tr := range []relay.Transport{relay.UDP, relay.TCP} {
		_, err := allocate(t, srv, tr, user, "not-"+pass)
		if turnCode(err) != 401 {
			t.Errorf("%s: wrong password: %v, want 401", tr, err)
		}
		_, err = allocate(t, srv, tr, "mallory", pass)
		if turnCode(err) != 401 {
			t.Errorf("%s: unknown user: %v, want 401", tr, err)
		}
	}
	if st, _ := srv.TURNStats(); st.AuthFailures < 4 || st.AllocationsTotal != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestTURNEphemeralCredentials(t *testing.T) {
	srv := startTURN(t, nil)
	u, p := server.EphemeralCredentials(secret, "bob", time.Now().Add(time.Hour))
	a, err := allocate(t, srv, relay.UDP, u, p)
	if err != nil {
		t.Fatalf("valid ephemeral credentials: %v", err)
	}
	_ = a.Close()
	u, p = server.EphemeralCredentials(secret, "bob", time.Now().Add(-time.Minute))
	if _, err := allocate(t, srv, relay.UDP, u, p); turnCode(err) != 401 {
		t.Errorf("expired credentials: %v, want 401", err)
	}
	u, p = server.EphemeralCredentials("other secret", "bob", time.Now().Add(time.Hour))
	if _, err := allocate(t, srv, relay.UDP, u, p); turnCode(err) != 401 {
		t.Errorf("credentials from another secret: %v, want 401", err)
	}
}

func TestTURNQuota(t *testing.T) {
	leakcheck.Check(t)
	srv := startTURN(t, func(c *server.TURNConfig) { c.UserQuota = 2 })
	var held []*relay.Allocation
	for i, tr := range []relay.Transport{relay.UDP, relay.TCP} {
		a, err := allocate(t, srv, tr, user, pass)
		if err != nil {
			t.Fatalf("allocation %d: %v", i+1, err)
		}
		held = append(held, a)
	}
	if _, err := allocate(t, srv, relay.UDP, user, pass); turnCode(err) != 486 {
		t.Fatalf("third allocation: %v, want 486", err)
	}
	// Another user has a quota of its own.
	u, p := server.EphemeralCredentials(secret, "bob", time.Now().Add(time.Hour))
	if _, err := allocate(t, srv, relay.UDP, u, p); err != nil {
		t.Fatalf("other user: %v", err)
	}
	// Releasing one allocation frees a slot (the release is a Refresh
	// with lifetime 0 that the client does not wait for).
	_ = held[0].Close()
	deadline := time.Now().Add(turnTestTimeout)
	for {
		_, err := allocate(t, srv, relay.UDP, user, pass)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a release: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st, _ := srv.TURNStats(); st.QuotaRejections < 1 {
		t.Errorf("stats %+v", st)
	}
}

// Relaying to loopback, private and the server's own service ports is
// refused with 403, over UDP and TCP.
func TestTURNPeerPolicy(t *testing.T) {
	leakcheck.Check(t)
	srv := startTURN(t, nil)
	for _, tr := range []relay.Transport{relay.UDP, relay.TCP} {
		a, err := allocate(t, srv, tr, user, pass)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), turnTestTimeout)
		for _, peer := range []string{"10.1.2.3:9", "192.168.1.1:80", "169.254.169.254:80", "100.64.0.1:53", "198.51.100.7:9", "224.0.0.1:9", "[::1]:9"} {
			err := a.Permit(ctx, netip.MustParseAddrPort(peer))
			if turnCode(err) != 403 {
				t.Errorf("%s: permission to %s: %v, want 403", tr, peer, err)
			}
		}
		cancel()
	}

	// 127.0.0.1 is the server's own address here: a permission is
	// granted (relay-to-relay needs it), but data to its STUN port is
	// not relayed.
	a, err := allocate(t, srv, relay.UDP, user, pass)
	if err != nil {
		t.Fatal(err)
	}
	bind := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	stunPort := net.UDPAddrFromAddrPort(srv.Addrs().Primary)
	before := srv.Stats().Requests
	for range 3 { // the first goes as a Send indication, later ones try a channel
		_, _ = a.Conn.WriteTo(bind.Raw, stunPort)
	}
	_ = a.Conn.SetReadDeadline(time.Now().Add(silence))
	buf := make([]byte, 1500)
	if n, from, err := a.Conn.ReadFrom(buf); err == nil {
		t.Errorf("the relay reached the server's STUN port: %d bytes from %v", n, from)
	}
	if got := srv.Stats().Requests; got != before {
		t.Errorf("the STUN server saw %d requests through the relay", got-before)
	}
	if routes, _ := server.FastRoutes(srv); routes != 0 {
		t.Errorf("a refused channel got %d fast-path routes", routes)
	}
	if st, _ := srv.TURNStats(); st.PeersRefused == 0 {
		t.Errorf("stats %+v", st)
	}
}

// A server with no allow list still relays between its own allocations
// (relay-to-relay), which is what two peers behind symmetric NATs use.
func TestTURNRelayToRelay(t *testing.T) {
	leakcheck.Check(t)
	srv := startTURN(t, nil)
	a, b := permittedPair(t, srv, relay.UDP, relay.TCP)
	buf := make([]byte, 100)
	for i := range 5 { // channel binding happens after the first write
		if _, err := a.Conn.WriteTo([]byte("hello"), net.UDPAddrFromAddrPort(b.Relayed)); err != nil {
			t.Fatal(err)
		}
		_ = b.Conn.SetReadDeadline(time.Now().Add(turnTestTimeout))
		n, from, err := b.Conn.ReadFrom(buf)
		if err != nil || string(buf[:n]) != "hello" || from.String() != a.Relayed.String() {
			t.Fatalf("write %d: got %q from %v (%v)", i, buf[:n], from, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestPeerPolicy(t *testing.T) {
	self := netip.MustParseAddr("203.0.113.10")
	p := server.PeerPolicy{Self: []netip.Addr{self}}
	for _, c := range []struct {
		ip string
		ok bool
	}{
		{"8.8.8.8", true}, {"2606:4700::1", true}, {"203.0.113.10", true},
		{"127.0.0.1", false}, {"10.0.0.1", false}, {"172.31.255.255", false}, {"192.168.0.1", false},
		{"169.254.1.1", false}, {"100.64.1.1", false}, {"0.0.0.0", false}, {"255.255.255.255", false},
		{"239.1.1.1", false}, {"198.51.100.1", false}, {"203.0.113.11", false}, {"::1", false},
		{"fe80::1", false}, {"fd00::1", false}, {"::ffff:127.0.0.1", false}, {"ff02::1", false},
	} {
		if err := p.CheckIP(netip.MustParseAddr(c.ip)); (err == nil) != c.ok {
			t.Errorf("%s: %v, want allowed=%v", c.ip, err, c.ok)
		}
	}
	p.Allow = []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("10.0.0.0/8")}
	if p.CheckIP(netip.MustParseAddr("203.0.113.11")) != nil || p.CheckIP(netip.MustParseAddr("10.9.9.9")) != nil {
		t.Error("--allow-peer did not open its range")
	}
	relayPort := netip.AddrPortFrom(self, 50000)
	isRelay := func(ap netip.AddrPort) bool { return ap == relayPort }
	if p.CheckPeer(relayPort, isRelay) != nil {
		t.Error("relay-to-relay refused")
	}
	if err := p.CheckPeer(netip.AddrPortFrom(self, 3478), isRelay); err == nil || !strings.Contains(err.Error(), "own address") {
		t.Errorf("server's own STUN port: %v", err)
	}
}

func TestParseUsers(t *testing.T) {
	u, err := server.ParseUsers(strings.NewReader("# lab users\nalice:wonder:land\n\n  bob:pw  \n"))
	if err != nil || len(u) != 2 || u["alice"] != "wonder:land" || u["bob"] != "pw" {
		t.Errorf("%v %v", u, err)
	}
	for _, bad := range []string{"alice\n", ":pw\n", "alice:\n", "a:1\na:2\n"} {
		if _, err := server.ParseUsers(strings.NewReader(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// The REST API password matches coturn's use-auth-secret (and pion's
// helper): base64(HMAC-SHA1(secret, "expiry:user")).
func TestEphemeralPassword(t *testing.T) {
	// Computed with: printf '1700000000:bob' | openssl dgst -sha1 -hmac s3cret -binary | base64
	if got := server.EphemeralPassword(secret, "1700000000:bob"); got != "iqOUFv+P824wi/aW3liW77QZa80=" {
		t.Errorf("password %s", got)
	}
}

// Closing the server with live allocations (UDP and TCP) ends every
// goroutine and socket it started, and fails the clients' conns.
func TestTURNShutdown(t *testing.T) {
	leakcheck.Check(t)
	n, _ := stdnet.NewNet()
	srv, err := server.Listen(n, server.Config{Addrs: server.Addrs{Primary: netip.MustParseAddrPort("127.0.0.1:0")},
		TURN: &server.TURNConfig{Users: map[string]string{user: pass}}})
	if err != nil {
		t.Fatal(err)
	}
	var allocs []*relay.Allocation
	for _, tr := range []relay.Transport{relay.UDP, relay.TCP} {
		a, err := allocate(t, srv, tr, user, pass)
		if err != nil {
			t.Fatal(err)
		}
		allocs = append(allocs, a)
	}
	if st, _ := srv.TURNStats(); st.Allocations != 2 || st.TCPConnections != 1 {
		t.Errorf("stats %+v", st)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("close: %v", err)
		}
	case <-time.After(turnTestTimeout):
		t.Fatal("close hangs")
	}
	for _, a := range allocs {
		_ = a.Close()
	}
}
