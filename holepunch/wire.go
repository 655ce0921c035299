package holepunch

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"net/netip"
)

// Wire format of a probe, all in network byte order:
//
//	magic[4] "NLHP" | version[1] | type[1] | flags[1] | side[1]
//	session[8] | nonce[12] | observed addr[16] port[2] | mac[16]
//
// The MAC is HMAC-SHA256 over everything before it, truncated to 16 bytes:
// 128 bits are far beyond what an off-path forger can guess in a session.
const (
	wireMagic   = "NLHP"
	wireVersion = 1
	nonceSize   = 12
	macSize     = 16
	headerSize  = 4 + 1 + 1 + 1 + 1 + 8 + nonceSize + 16 + 2
	probeSize   = headerSize + macSize
)

type msgType byte

const (
	msgPing msgType = 1
	msgPong msgType = 2
)

// flagConfirmed says the sender has already received a pong for one of its
// own pings, so the receiver knows the path works in both directions.
const flagConfirmed = 1

type nonce [nonceSize]byte

type probe struct {
	typ       msgType
	confirmed bool
	side      Side
	nonce     nonce
	// observed is, in a pong, the address the ping came from: the sender
	// of the ping learns its own mapping toward the peer.
	observed netip.AddrPort
}

var (
	errNotProbe = errors.New("not a holepunch probe")
	errBadMAC   = errors.New("probe authentication failed")
)

func newNonce() nonce {
	var n nonce
	_, _ = rand.Read(n[:]) // crypto/rand.Read never fails on Linux
	return n
}

func (s Session) mac(b []byte) []byte {
	h := hmac.New(sha256.New, s.Key[:])
	h.Write(b)
	return h.Sum(nil)[:macSize]
}

// marshal appends the authenticated encoding of p to b.
func (s Session) marshal(b []byte, p probe) []byte {
	start := len(b)
	b = append(b, wireMagic...)
	var flags byte
	if p.confirmed {
		flags |= flagConfirmed
	}
	b = append(b, wireVersion, byte(p.typ), flags, byte(p.side))
	b = append(b, s.ID[:]...)
	b = append(b, p.nonce[:]...)
	a := p.observed.Addr().As16()
	if !p.observed.IsValid() {
		a = [16]byte{}
	}
	b = append(b, a[:]...)
	b = binary.BigEndian.AppendUint16(b, p.observed.Port())
	return append(b, s.mac(b[start:])...)
}

// unmarshal checks and decodes a probe of this session sent by the peer.
func (s Session) unmarshal(b []byte) (probe, error) {
	if len(b) != probeSize || string(b[:4]) != wireMagic || b[4] != wireVersion {
		return probe{}, errNotProbe
	}
	if [8]byte(b[8:16]) != s.ID {
		return probe{}, errNotProbe
	}
	if !hmac.Equal(s.mac(b[:headerSize]), b[headerSize:]) {
		return probe{}, errBadMAC
	}
	p := probe{typ: msgType(b[5]), confirmed: b[6]&flagConfirmed != 0, side: Side(b[7])}
	if p.typ != msgPing && p.typ != msgPong {
		return probe{}, errNotProbe
	}
	copy(p.nonce[:], b[16:16+nonceSize])
	off := 16 + nonceSize
	if a := [16]byte(b[off : off+16]); a != [16]byte{} {
		p.observed = netip.AddrPortFrom(netip.AddrFrom16(a).Unmap(), binary.BigEndian.Uint16(b[off+16:]))
	}
	return p, nil
}
