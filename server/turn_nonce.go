package server

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/stun/v3"
)

// TURN nonces bound to the client's transport address.
//
// pion/turn's nonces are one value per minute for every client, so a
// signed request captured on the way could be replayed from any other
// address for an hour, creating allocations charged to its user. natlab
// therefore hands clients its own nonces, an HMAC of the time and the
// client's address, in place of pion's (in pion's 401 and 438 answers),
// checks them on every signed request, and re-signs a checked request
// with pion's current nonce before pion sees it: a request replayed from
// another address meets a 438 Stale Nonce and cannot be re-signed without
// the password.

// nonceLifetime is how long a nonce is good for, as pion's (RFC 5766 §4
// leaves it to the server; an hour means one 438 an hour per client).
const nonceLifetime = time.Hour

type nonceBinder struct {
	key [32]byte
	now func() time.Time

	mu   sync.Mutex
	pion string // pion/turn's latest nonce, to re-sign checked requests with
}

func newNonceBinder(now func() time.Time) *nonceBinder {
	n := &nonceBinder{now: now}
	if _, err := rand.Read(n.key[:]); err != nil {
		panic("nonce key: " + err.Error()) // crypto/rand does not fail on supported systems
	}
	return n
}

// issue returns a nonce for addr: 8 bytes of issue time, 12 of HMAC.
func (n *nonceBinder) issue(addr netip.AddrPort) string {
	var b [20]byte
	binary.BigEndian.PutUint64(b[:8], uint64(n.now().Unix()))
	copy(b[8:], n.mac(b[:8], addr))
	return hex.EncodeToString(b[:])
}

func (n *nonceBinder) mac(ts []byte, addr netip.AddrPort) []byte {
	h := hmac.New(sha256.New, n.key[:])
	h.Write(ts)
	a, _ := addr.MarshalBinary()
	h.Write(a)
	return h.Sum(nil)[:12]
}

// valid reports whether nonce was issued to addr and is still fresh.
func (n *nonceBinder) valid(nonce string, addr netip.AddrPort) bool {
	b, err := hex.DecodeString(nonce)
	if err != nil || len(b) != 20 {
		return false
	}
	issued := time.Unix(int64(binary.BigEndian.Uint64(b[:8])), 0) //nolint:gosec // a timestamp we wrote
	if age := n.now().Sub(issued); age < 0 || age > nonceLifetime {
		return false
	}
	return hmac.Equal(b[8:], n.mac(b[:8], addr))
}

// outgoing replaces pion's nonce in an error answer (401, 438) to addr
// with one bound to addr; other messages are returned as they are, with
// changed false.
func (n *nonceBinder) outgoing(p []byte, addr netip.AddrPort) (q []byte, changed bool) {
	// Only STUN error responses carry nonces: class bits 0b11.
	if len(p) < headerSize || p[0]&0xC0 != 0 || p[0]&0x01 == 0 || p[1]&0x10 == 0 {
		return p, false
	}
	m := &stun.Message{Raw: append([]byte(nil), p...)}
	if m.Decode() != nil || !m.Contains(stun.AttrNonce) {
		return p, false
	}
	var pionNonce stun.Nonce
	if pionNonce.GetFrom(m) == nil {
		n.mu.Lock()
		n.pion = pionNonce.String()
		n.mu.Unlock()
	}
	out, err := rebuild(m, []byte(n.issue(addr)), nil)
	if err != nil {
		return p, false
	}
	return out, true
}

// incoming checks the nonce of a signed request from addr (whose
// integrity key checked) and returns the request re-signed with pion's
// nonce; ok false means the nonce is not addr's or is stale. Before pion
// has issued a nonce there is none to re-sign with: fwd is nil and the
// request goes on as it is, for pion to answer 438 with its first nonce
// (which outgoing then replaces).
func (n *nonceBinder) incoming(m *stun.Message, addr netip.AddrPort, key []byte) (fwd []byte, ok bool) {
	var nonce stun.Nonce
	if nonce.GetFrom(m) != nil || !n.valid(nonce.String(), addr) {
		return nil, false
	}
	n.mu.Lock()
	pionNonce := n.pion
	n.mu.Unlock()
	if pionNonce == "" {
		return nil, true
	}
	out, err := rebuild(m, []byte(pionNonce), key)
	return out, err == nil
}

// stale is natlab's 438 Stale Nonce for m, with a fresh nonce for addr.
func (n *nonceBinder) stale(m *stun.Message, method stun.Method, realm string, addr netip.AddrPort) []byte {
	res, err := stun.Build(stun.NewTransactionIDSetter(m.TransactionID),
		stun.NewType(method, stun.ClassErrorResponse),
		&stun.ErrorCodeAttribute{Code: stun.CodeStaleNonce, Reason: []byte("Stale Nonce")},
		stun.NewRealm(realm), stun.NewNonce(n.issue(addr)), stun.NewSoftware(DefaultSoftware), stun.Fingerprint)
	if err != nil {
		return nil
	}
	return res.Raw
}

// rebuild copies m with its NONCE replaced, up to MESSAGE-INTEGRITY
// (attributes after it are ignored, RFC 5389 §15.4), signed again with
// key if given, and with a FINGERPRINT if m had one.
func rebuild(m *stun.Message, nonce, key []byte) ([]byte, error) {
	out := &stun.Message{Type: m.Type, TransactionID: m.TransactionID}
	out.WriteHeader()
	fingerprint := m.Contains(stun.AttrFingerprint)
	for _, a := range m.Attributes {
		if a.Type == stun.AttrMessageIntegrity || a.Type == stun.AttrFingerprint {
			break
		}
		if a.Type == stun.AttrNonce {
			out.Add(stun.AttrNonce, nonce)
			continue
		}
		out.Add(a.Type, a.Value)
	}
	if key != nil {
		if err := stun.MessageIntegrity(key).AddTo(out); err != nil {
			return nil, err
		}
	}
	if fingerprint {
		if err := stun.Fingerprint.AddTo(out); err != nil {
			return nil, err
		}
	}
	return out.Raw, nil
}
