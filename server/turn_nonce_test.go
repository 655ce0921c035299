package server_test

import (
	"net"
	"testing"

	"github.com/pion/stun/v3"

	"github.com/natlab/natlab/internal/leakcheck"
	"github.com/natlab/natlab/server"
)

// A signed Allocate captured on the way and replayed from another
// address must not create an allocation (issue 11: nonces were not tied
// to the client's address, so a replay worked from any port for an hour).
func TestTURNReplayFromOtherAddressRefused(t *testing.T) {
	leakcheck.Check(t)
	srv := startTURN(t, nil)
	to := srv.Addrs().Primary
	a, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	res := exchange(t, a, to, stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), turnTransportUDP))
	var nonce stun.Nonce
	if err := nonce.GetFrom(res); err != nil {
		t.Fatalf("no nonce: %v", res)
	}
	signed := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), turnTransportUDP,
		stun.NewUsername(user), stun.NewRealm(server.DefaultRealm), nonce,
		stun.NewLongTermIntegrity(user, server.DefaultRealm, pass), stun.Fingerprint)
	// The replay arrives first, from another port.
	b, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	res = exchange(t, b, to, signed)
	var code stun.ErrorCodeAttribute
	if code.GetFrom(res) != nil || code.Code != stun.CodeStaleNonce {
		t.Errorf("replayed Allocate from another address: %v, want 438", res)
	}
	if st, _ := srv.TURNStats(); st.Allocations != 0 || st.StaleNonces != 1 {
		t.Errorf("after the replay: %+v", st)
	}
	// The real client still gets its allocation with the same nonce.
	if res = exchange(t, a, to, signed); res.Type.Class != stun.ClassSuccessResponse {
		t.Errorf("the client's own Allocate: %v", res)
	}
}

// A client whose first request is signed with a nonce the server never
// issued (a server restarted under it) gets a 438 and then its
// allocation, even before pion/turn has issued any nonce of its own.
func TestTURNNonceFromAnotherServerRecovers(t *testing.T) {
	leakcheck.Check(t)
	other := startTURN(t, nil)
	srv := startTURN(t, nil)
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	signed := func(nonce stun.Nonce) *stun.Message {
		return stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), turnTransportUDP,
			stun.NewUsername(user), stun.NewRealm(server.DefaultRealm), nonce,
			stun.NewLongTermIntegrity(user, server.DefaultRealm, pass), stun.Fingerprint)
	}
	var nonce stun.Nonce
	res := exchange(t, c, other.Addrs().Primary, stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), turnTransportUDP))
	if err := nonce.GetFrom(res); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		res = exchange(t, c, srv.Addrs().Primary, signed(nonce))
		if res.Type.Class == stun.ClassSuccessResponse {
			return
		}
		if err := nonce.GetFrom(res); err != nil {
			t.Fatalf("no nonce in %v", res)
		}
	}
	t.Errorf("no allocation after three tries: %v", res)
}
