package relay

import (
	"net"

	"github.com/pion/stun/v3"
)

// Family is the address family of a relayed address (RFC 6156); the
// strings are part of the JSON schema.
type Family string

// Address families.
const (
	IPv4 Family = "ipv4"
	IPv6 Family = "ipv6"
)

// REQUESTED-ADDRESS-FAMILY values (RFC 6156 section 4.1.1).
const (
	familyIPv4 byte = 0x01
	familyIPv6 byte = 0x02
)

// familyConn adds REQUESTED-ADDRESS-FAMILY to the client's Allocate
// requests and signs them again: pion/turn's client never sends it, and
// without it an RFC 6156 server (coturn by default) relays IPv4 even to
// a client that reached it over IPv6.
type familyConn struct {
	net.PacketConn
	family   byte
	password string
}

func (c *familyConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	out, ok := withFamily(p, c.family, c.password)
	if !ok {
		return c.PacketConn.WriteTo(p, addr)
	}
	if _, err := c.PacketConn.WriteTo(out, addr); err != nil {
		return 0, err
	}
	return len(p), nil
}

// withFamily rebuilds an Allocate request with REQUESTED-ADDRESS-FAMILY
// before its MESSAGE-INTEGRITY (recomputed from the request's own USERNAME
// and REALM, as the client computed it) and FINGERPRINT. ok is false for
// any other message, which then goes out unchanged.
func withFamily(p []byte, family byte, password string) (out []byte, ok bool) {
	if !stun.IsMessage(p) {
		return nil, false
	}
	m := &stun.Message{Raw: append([]byte(nil), p...)}
	if m.Decode() != nil || m.Type != stun.NewType(stun.MethodAllocate, stun.ClassRequest) || m.Contains(stun.AttrRequestedAddressFamily) {
		return nil, false
	}
	r := &stun.Message{Type: m.Type, TransactionID: m.TransactionID}
	r.WriteHeader()
	signed, fingerprint := false, false
	for _, a := range m.Attributes {
		switch a.Type {
		case stun.AttrMessageIntegrity:
			signed = true
		case stun.AttrFingerprint:
			fingerprint = true
		default:
			r.Add(a.Type, a.Value)
		}
	}
	r.Add(stun.AttrRequestedAddressFamily, []byte{family, 0, 0, 0})
	if signed {
		var user stun.Username
		var realm stun.Realm
		if user.GetFrom(m) != nil || realm.GetFrom(m) != nil {
			return nil, false
		}
		if stun.NewLongTermIntegrity(user.String(), realm.String(), password).AddTo(r) != nil {
			return nil, false
		}
	}
	if fingerprint && stun.Fingerprint.AddTo(r) != nil {
		return nil, false
	}
	return r.Raw, true
}

func familyName(f byte) string {
	if f == familyIPv6 {
		return string(IPv6)
	}
	return string(IPv4)
}
