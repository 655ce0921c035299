package testnet

import (
	"net"
	"testing"
	"time"

	"github.com/pion/logging"
	"github.com/pion/turn/v4"

	"github.com/natlab/natlab/internal/leakcheck"
)

// pion/turn's client and server run unmodified on the lab: a client behind
// a symmetric NAT allocates a relay and exchanges data with a peer behind a
// full cone.
func TestInProcessPionTURN(t *testing.T) {
	leakcheck.Check(t)
	topo, err := PairTopology("symmetric", "full-cone")
	if err != nil {
		t.Fatal(err)
	}
	lab := startLab(t, topo)
	const realm, user, pass = "natlab", "alice", "secret"
	logs := logging.NewDefaultLoggerFactory()
	logs.DefaultLogLevel = logging.LogLevelError

	srvConn, err := lab.Server.Net.ListenPacket("udp4", "203.0.113.11:3480")
	if err != nil {
		t.Fatal(err)
	}
	key := turn.GenerateAuthKey(user, realm, pass)
	server, err := turn.NewServer(turn.ServerConfig{
		Realm:         realm,
		LoggerFactory: logs,
		AuthHandler: func(u, r string, _ net.Addr) ([]byte, bool) {
			return key, u == user && r == realm
		},
		PacketConnConfigs: []turn.PacketConnConfig{{
			PacketConn: srvConn,
			RelayAddressGenerator: &turn.RelayAddressGeneratorStatic{
				RelayAddress: ServerAddrs[1].AsSlice(), Address: ServerAddrs[1].String(), Net: lab.Server.Net,
			},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = server.Close() }()

	clientConn := listen(t, lab.Site("a").Host)
	client, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: "203.0.113.11:3480", TURNServerAddr: "203.0.113.11:3480",
		Username: user, Password: pass, Realm: realm,
		Conn: clientConn, Net: lab.Site("a").Host.Net, LoggerFactory: logs,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if err := client.Listen(); err != nil {
		t.Fatal(err)
	}
	relay, err := client.Allocate()
	if err != nil {
		t.Fatalf("allocate: %v", err)
	}
	defer func() { _ = relay.Close() }()
	if got := addrPort(relay.LocalAddr()).Addr(); got != ServerAddrs[1] {
		t.Fatalf("relayed address %v, want on %v", relay.LocalAddr(), ServerAddrs[1])
	}

	peer := listen(t, lab.Site("b").Host)
	startEcho(t, lab)
	peerMapped := ask(t, peer, echoEndpoint(0))
	if _, err := relay.WriteTo([]byte("via relay"), net.UDPAddrFromAddrPort(peerMapped)); err != nil {
		t.Fatal(err)
	}
	_ = peer.SetReadDeadline(time.Now().Add(replyWait))
	buf := make([]byte, 100)
	n, from, err := peer.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "via relay" || from.String() != relay.LocalAddr().String() {
		t.Fatalf("peer got %q from %v (%v), want from the relay %v", buf[:n], from, err, relay.LocalAddr())
	}
	if _, err := peer.WriteTo([]byte("back"), from); err != nil {
		t.Fatal(err)
	}
	_ = relay.SetReadDeadline(time.Now().Add(replyWait))
	n, from, err = relay.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "back" || addrPort(from) != peerMapped {
		t.Fatalf("client got %q from %v (%v), want from %v", buf[:n], from, err, peerMapped)
	}
}
