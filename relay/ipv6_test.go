package relay

import (
	"bytes"
	"context"
	"crypto/tls"
	"net/netip"
	"strings"
	"testing"

	"github.com/natlab/natlab/internal/interop"

	"github.com/pion/stun/v3"
	"github.com/pion/transport/v4/stdnet"

	"github.com/natlab/natlab/internal/leakcheck"
)

// TURN over IPv6 against natlab's server on ::1: over UDP, TCP and TLS the
// client reaches the server over IPv6, gets an IPv6 relayed address and
// relays between two such allocations. Asking the IPv6 server for an
// IPv4 relay draws its 440, which shows REQUESTED-ADDRESS-FAMILY is on
// the wire.
func TestRelayIPv6(t *testing.T) {
	interop.NeedLoopback6(t)
	for _, tr := range []Transport{UDP, TCP, TLS} {
		t.Run(string(tr), func(t *testing.T) {
			leakcheck.Check(t)
			srv := startServerOn(t, netip.MustParseAddrPort("[::1]:0"), tr == TLS)
			addr := srv.Addrs().Primary
			if tr == TLS {
				addr, _ = srv.TURNTLSAddr()
			}
			opts := AllocOptions{Server: addr.String(), Transport: tr, Username: testUser, Password: testPass, Family: IPv6,
				TLSConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // a self-signed test certificate
			figs := allocatePair6(t, opts)
			for i, f := range figs {
				t.Logf("side %d over %s/IPv6: %+v", i, tr, f)
				if f.Echoes < DefaultEchoes || f.ThroughputInMbps <= 0 || !f.PeerReported {
					t.Errorf("side %d figures %+v", i, f)
				}
			}
			n, _ := stdnet.NewNet()
			opts.Net, opts.Family = n, IPv4
			_, err := Allocate(context.Background(), opts)
			if err == nil || !strings.Contains(err.Error(), "440") {
				t.Errorf("IPv4 relay from the IPv6 server: err %v, want its 440", err)
			}
		})
	}
}

// allocatePair6 makes two allocations with o, checks each relayed
// address is IPv6 on the server's address, and measures between them.
func allocatePair6(t *testing.T, o AllocOptions) [2]Figures {
	t.Helper()
	n, err := stdnet.NewNet()
	if err != nil {
		t.Fatal(err)
	}
	o.Net = n
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	srv := netip.MustParseAddrPort(o.Server)
	var allocs [2]*Allocation
	// The relayed address is on the server's address, whichever port the
	// client reached (TURN over TLS listens on its own).
	for i := range allocs {
		a, err := Allocate(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		allocs[i] = a
		if a.Relayed.Addr() != srv.Addr() {
			t.Fatalf("relayed address %v, want an IPv6 one on %v", a.Relayed, srv.Addr())
		}
	}
	return measurePair(t, ctx, allocs[0], allocs[1], MeasureOptions{BurstBytes: 1 << 20, Tag: 6})
}

// withFamily adds REQUESTED-ADDRESS-FAMILY to Allocate requests only,
// and the signed request it rebuilds verifies with the client's
// long-term key and fingerprint.
func TestWithFamily(t *testing.T) {
	user, realm := stun.NewUsername(testUser), stun.NewRealm("natlab")
	key := stun.NewLongTermIntegrity(testUser, "natlab", testPass)
	alloc := stun.NewType(stun.MethodAllocate, stun.ClassRequest)
	signed := stun.MustBuild(stun.TransactionID, alloc, user, realm, stun.NewNonce("n"), key, stun.Fingerprint)
	out, ok := withFamily(signed.Raw, familyIPv6, testPass)
	if !ok {
		t.Fatal("signed Allocate not rewritten")
	}
	m := &stun.Message{Raw: out}
	if err := m.Decode(); err != nil {
		t.Fatal(err)
	}
	if v, err := m.Get(stun.AttrRequestedAddressFamily); err != nil || v[0] != familyIPv6 {
		t.Errorf("REQUESTED-ADDRESS-FAMILY %v, %v", v, err)
	}
	if err := key.Check(m); err != nil {
		t.Errorf("MESSAGE-INTEGRITY: %v", err)
	}
	if err := stun.Fingerprint.Check(m); err != nil {
		t.Errorf("FINGERPRINT: %v", err)
	}
	if m.TransactionID != signed.TransactionID {
		t.Error("transaction ID changed")
	}
	unsigned := stun.MustBuild(stun.TransactionID, alloc, stun.Fingerprint)
	if out, ok := withFamily(unsigned.Raw, familyIPv4, testPass); !ok || !bytes.Contains(out, []byte{0, 0x17, 0, 4, familyIPv4}) {
		t.Errorf("unsigned Allocate: %x, %v", out, ok)
	}
	again, _ := withFamily(signed.Raw, familyIPv6, testPass)
	for _, p := range [][]byte{nil, []byte("not stun"), stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw, again} {
		if _, ok := withFamily(p, familyIPv6, testPass); ok {
			t.Errorf("rewrote %x", p)
		}
	}
}
