// Package server is natlab's public side: an RFC 5780 STUN server that lets
// clients discover their NAT's mapping and filtering behaviour. The binding
// logic is a pure function (Handler.Handle) so that other servers, such as a
// TURN relay wrapping its PacketConn, can answer Binding requests the same way.
package server

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"net/netip"
	"slices"

	"github.com/pion/stun/v3"
)

// Wire constants of RFC 5389 / RFC 3489 that pion/stun keeps unexported.
const (
	headerSize  = 20
	magicCookie = 0x2112A442
	// fingerprintXOR is the value FINGERPRINT's CRC-32 is XOR-ed with.
	fingerprintXOR = 0x5354554e
	// maxMessageSize bounds what a TCP stream may announce: RFC 5389 says
	// a message over TCP may be up to 64 KB, but a Binding request with a
	// few attributes never needs more than this.
	maxMessageSize = 4096
)

// CHANGE-REQUEST flags (RFC 5780 §7.2).
const (
	changeIP   = 0x04
	changePort = 0x02
)

// Addrs is the server's address plan: IP1:P1 and the optional alternate IP2
// and port P2. From these follow up to four sockets.
type Addrs struct {
	// Primary is IP1:P1, where clients send their first request.
	Primary netip.AddrPort
	// AltIP is IP2; invalid (zero) when the host has a single address.
	AltIP netip.Addr
	// AltPort is P2; 0 when there is no alternate port.
	AltPort uint16
}

// Sockets lists the transport addresses the plan serves: IP1:P1 first, then
// IP1:P2, IP2:P1, IP2:P2 as far as they exist.
func (a Addrs) Sockets() []netip.AddrPort {
	out := []netip.AddrPort{a.Primary}
	if a.AltPort != 0 {
		out = append(out, netip.AddrPortFrom(a.Primary.Addr(), a.AltPort))
	}
	if a.AltIP.IsValid() {
		out = append(out, netip.AddrPortFrom(a.AltIP, a.Primary.Port()))
		if a.AltPort != 0 {
			out = append(out, netip.AddrPortFrom(a.AltIP, a.AltPort))
		}
	}
	return out
}

// Full reports whether the plan supports every RFC 5780 test: it needs a
// second IP and a second port.
func (a Addrs) Full() bool { return a.AltIP.IsValid() && a.AltPort != 0 }

// Unsupported names the RFC 5780 tests a client cannot run against this plan,
// each with the reason.
func (a Addrs) Unsupported() []string {
	var out []string
	if !a.AltIP.IsValid() {
		out = append(out,
			"mapping tests II/III (no alternate IP)",
			"filtering test II, change IP and port (no alternate IP)")
	}
	if a.AltPort == 0 {
		out = append(out, "filtering test III, change port (no alternate port)")
		if a.AltIP.IsValid() {
			out = append(out, "mapping test III and filtering test II (no alternate port)")
		}
	}
	if !a.Full() {
		out = append(out, "OTHER-ADDRESS is omitted, so RFC 5780 clients will not attempt these tests")
	}
	return out
}

// has reports whether ap is one of the plan's sockets.
func (a Addrs) has(ap netip.AddrPort) bool {
	for _, s := range a.Sockets() {
		if s == ap {
			return true
		}
	}
	return false
}

// other is the socket differing from local in both address and port (the
// value of OTHER-ADDRESS), if the plan has one.
func (a Addrs) other(local netip.AddrPort) (netip.AddrPort, bool) {
	if !a.Full() {
		return netip.AddrPort{}, false
	}
	ip, port := a.AltIP, a.AltPort
	if local.Addr() == a.AltIP {
		ip = a.Primary.Addr()
	}
	if local.Port() == a.AltPort {
		port = a.Primary.Port()
	}
	return netip.AddrPortFrom(ip, port), true
}

// Handler answers STUN Binding requests. It holds no mutable state, so one
// Handler serves any number of goroutines.
type Handler struct {
	addrs    Addrs
	software string
	// streamOther sends OTHER-ADDRESS over TCP too: set (before serving)
	// when every socket of the plan serves TCP, where it names the
	// connect-back source and the TCP mapping tests' target.
	streamOther bool
	// swAttr and swClassic are the SOFTWARE attribute, encoded once: as
	// is, and padded with spaces for RFC 3489 clients, whose SERVER-NAME
	// had to be a multiple of 4 bytes (they reject anything else).
	swAttr, swClassic []byte
}

// NewHandler returns a Handler for the address plan; software is sent in the
// SOFTWARE attribute ("" for none).
func NewHandler(addrs Addrs, software string) *Handler {
	h := &Handler{addrs: addrs, software: software}
	if software != "" {
		classic := software
		for len(classic)%4 != 0 {
			classic += " "
		}
		h.swAttr, h.swClassic = softwareAttr(software), softwareAttr(classic)
	}
	return h
}

// Reply is what to send for one request. A nil Raw means send nothing.
type Reply struct {
	// Raw is the encoded response.
	Raw []byte
	// From is the local socket the response must leave from (it differs
	// from the receiving socket when the client asked for CHANGE-REQUEST).
	From netip.AddrPort
	// To is where to send it (the request's source, or its IP with the
	// port of RESPONSE-PORT).
	To netip.AddrPort
	// Error is true for an error response (400, 420).
	Error bool
}

// Handle answers one datagram received from `from` on the local socket
// `local`. Non-STUN input, STUN responses and indications, and messages
// with a bad FINGERPRINT yield a zero Reply. It never panics.
func (h *Handler) Handle(req []byte, from, local netip.AddrPort) Reply {
	return h.handle(nil, req, from, local, false)
}

// HandleStream is Handle for a stream transport (TCP): the response always
// goes back on the same connection, so CHANGE-REQUEST and RESPONSE-PORT
// are answered with 420.
func (h *Handler) HandleStream(req []byte, from, local netip.AddrPort) Reply {
	return h.handle(nil, req, from, local, true)
}

// request is the parsed part of a request that the answer depends on.
type request struct {
	classic    bool // RFC 3489: no magic cookie, 16-byte transaction ID
	method     uint16
	txid       [16]byte
	change     uint32
	hasChange  bool
	respPort   uint16
	hasRespPrt bool
	unknown    []stun.AttrType
}

// refuse lists t in the 420 response's UNKNOWN-ATTRIBUTES, once.
func (r *request) refuse(t stun.AttrType) {
	if !slices.Contains(r.unknown, t) {
		r.unknown = append(r.unknown, t)
	}
}

// ignorable are comprehension-required attributes a Binding request may
// carry that need no action from an unauthenticated STUN server.
var ignorable = map[uint16]bool{
	uint16(stun.AttrUsername): true, uint16(stun.AttrMessageIntegrity): true,
	uint16(stun.AttrMessageIntegritySHA256): true, uint16(stun.AttrUserhash): true,
	uint16(stun.AttrPadding): true, uint16(stun.AttrPriority): true,
	uint16(stun.AttrUseCandidate): true,
	0x0002:                        true, // RFC 3489 RESPONSE-ADDRESS: unsafe to honour (reflection), ignored
}

// parse checks the framing of a STUN request; ok is false for anything that
// must not be answered.
func parse(b []byte) (r request, ok bool) {
	if len(b) < headerSize || b[0]&0xC0 != 0 {
		return r, false
	}
	typ := binary.BigEndian.Uint16(b[0:2])
	size := int(binary.BigEndian.Uint16(b[2:4]))
	if size%4 != 0 || headerSize+size != len(b) {
		return r, false
	}
	// Class bits are 0x0110 of the type; 00 is a request.
	if typ&0x0110 != 0 {
		return r, false
	}
	r.method = typ &^ 0x0110
	r.classic = binary.BigEndian.Uint32(b[4:8]) != magicCookie
	copy(r.txid[:], b[4:20])
	if r.classic && typ != 0x0001 {
		// RFC 3489 only knew Binding and Shared Secret; anything else
		// without a cookie is more likely noise than STUN.
		return r, false
	}
	for off := headerSize; off < len(b); {
		if len(b)-off < 4 {
			return r, false
		}
		at := binary.BigEndian.Uint16(b[off : off+2])
		al := int(binary.BigEndian.Uint16(b[off+2 : off+4]))
		start := off + 4
		padded := (al + 3) &^ 3
		if len(b)-start < padded {
			return r, false
		}
		v := b[start : start+al]
		switch stun.AttrType(at) {
		case stun.AttrChangeRequest:
			if al != 4 {
				return r, false
			}
			r.change, r.hasChange = binary.BigEndian.Uint32(v), true
		case stun.AttrResponsePort:
			if al != 4 {
				return r, false
			}
			r.respPort, r.hasRespPrt = binary.BigEndian.Uint16(v), true
		case stun.AttrFingerprint:
			if al != 4 || start+padded != len(b) {
				return r, false // FINGERPRINT must be last
			}
			// The CRC covers the message up to this attribute, with the
			// length field as sent (which already counts FINGERPRINT).
			if crc32.ChecksumIEEE(b[:off])^fingerprintXOR != binary.BigEndian.Uint32(v) {
				return r, false
			}
		default:
			if at < 0x8000 && !ignorable[at] {
				r.unknown = append(r.unknown, stun.AttrType(at))
			}
		}
		off = start + padded
	}
	return r, true
}

// handle answers b; a success response is appended to dst (a fresh buffer
// when dst is nil), so the server can encode into a reused buffer.
func (h *Handler) handle(dst, b []byte, from, local netip.AddrPort, stream bool) (rep Reply) {
	req, ok := parse(b)
	if !ok {
		return Reply{}
	}
	from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	rep.From, rep.To = local, from
	if req.method != uint16(stun.MethodBinding) {
		return h.errorReply(req, rep, stun.CodeBadRequest, nil)
	}
	if stream && req.hasChange {
		req.refuse(stun.AttrChangeRequest)
	}
	if stream && req.hasRespPrt {
		req.refuse(stun.AttrResponsePort)
	}
	if req.hasChange && !stream {
		src := local
		if req.change&changeIP != 0 {
			if !h.addrs.AltIP.IsValid() {
				req.refuse(stun.AttrChangeRequest)
			} else if local.Addr() == h.addrs.AltIP {
				src = netip.AddrPortFrom(h.addrs.Primary.Addr(), src.Port())
			} else {
				src = netip.AddrPortFrom(h.addrs.AltIP, src.Port())
			}
		}
		if req.change&changePort != 0 {
			switch {
			case h.addrs.AltPort == 0:
				req.refuse(stun.AttrChangeRequest)
			case local.Port() == h.addrs.AltPort:
				src = netip.AddrPortFrom(src.Addr(), h.addrs.Primary.Port())
			default:
				src = netip.AddrPortFrom(src.Addr(), h.addrs.AltPort)
			}
		}
		// RFC 5780 §6.1: a change the server cannot make is answered
		// with 420, so the client does not mistake silence for filtering.
		if !h.addrs.has(src) {
			req.refuse(stun.AttrChangeRequest)
		}
		rep.From = src
	}
	if req.hasRespPrt && !stream {
		if req.respPort == 0 {
			rep.From = local
			return h.errorReply(req, rep, stun.CodeBadRequest, nil)
		}
		rep.To = netip.AddrPortFrom(from.Addr(), req.respPort)
	}
	if len(req.unknown) > 0 {
		rep.From, rep.To = local, from
		return h.errorReply(req, rep, stun.CodeUnknownAttribute, req.unknown)
	}

	if dst == nil {
		dst = make([]byte, 0, successCap)
	}
	raw, ok := h.appendSuccess(dst[:0], req, from, rep.From, local, stream)
	if !ok {
		return Reply{} // only on an address that cannot be encoded; nothing sensible to send
	}
	rep.Raw = raw
	return rep
}

// successCap fits a success response with IPv6 addresses and a short
// SOFTWARE, so encoding it grows nothing.
const successCap = 256

// appendSuccess appends the Binding success response to dst. It encodes the
// attributes by hand, in the order and layout pion/stun would (the tests
// compare the two byte for byte): building a stun.Message with setters costs
// some 20 allocations per response, which is most of a busy server's work.
func (h *Handler) appendSuccess(dst []byte, req request, from, src, local netip.AddrPort, stream bool) ([]byte, bool) {
	if !from.Addr().IsValid() {
		return nil, false
	}
	start := len(dst)
	dst = binary.BigEndian.AppendUint16(dst, uint16(stun.BindingSuccess.Value()))
	dst = append(dst, 0, 0) // length, set below
	if req.classic {
		dst = append(dst, req.txid[:]...) // RFC 3489: the whole 16-byte ID, no cookie
	} else {
		dst = binary.BigEndian.AppendUint32(dst, magicCookie)
		dst = append(dst, req.txid[4:]...)
		dst = appendXORAddr(dst, from, req.txid)
	}
	dst = appendAddr(dst, stun.AttrMappedAddress, from)
	if src.Addr().IsValid() && !src.Addr().IsUnspecified() {
		dst = appendAddr(dst, stun.AttrSourceAddress, src)
		dst = appendAddr(dst, stun.AttrResponseOrigin, src)
	}
	if other, ok := h.addrs.other(local); ok && (!stream || h.streamOther) {
		dst = appendAddr(dst, stun.AttrChangedAddress, other)
		dst = appendAddr(dst, stun.AttrOtherAddress, other)
	}
	if h.software != "" {
		sw := h.swAttr
		if req.classic {
			sw = h.swClassic
		}
		if sw == nil {
			return nil, false // too long for SOFTWARE; pion refuses it too
		}
		dst = append(dst, sw...)
	}
	msg := dst[start:]
	if req.classic {
		// Classic clients get no FINGERPRINT, as they predate it.
		binary.BigEndian.PutUint16(msg[2:4], uint16(len(msg)-headerSize))
		return dst, true
	}
	// The FINGERPRINT CRC covers the header with the length that already
	// counts FINGERPRINT itself.
	binary.BigEndian.PutUint16(msg[2:4], uint16(len(msg)-headerSize+8))
	crc := crc32.ChecksumIEEE(msg) ^ fingerprintXOR
	dst = binary.BigEndian.AppendUint16(dst, uint16(stun.AttrFingerprint))
	dst = binary.BigEndian.AppendUint16(dst, 4)
	dst = binary.BigEndian.AppendUint32(dst, crc)
	return dst, true
}

// appendAddr appends a MAPPED-ADDRESS-style attribute of type t.
func appendAddr(dst []byte, t stun.AttrType, ap netip.AddrPort) []byte {
	ip := ap.Addr().Unmap()
	family, n := uint16(1), 4
	if ip.Is6() {
		family, n = 2, 16
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(t))
	dst = binary.BigEndian.AppendUint16(dst, uint16(4+n))
	dst = binary.BigEndian.AppendUint16(dst, family)
	dst = binary.BigEndian.AppendUint16(dst, ap.Port())
	if n == 4 {
		a := ip.As4()
		return append(dst, a[:]...)
	}
	a := ip.As16()
	return append(dst, a[:]...)
}

// appendXORAddr appends XOR-MAPPED-ADDRESS (RFC 5389 §15.2); txid is the
// request's cookie and transaction ID.
func appendXORAddr(dst []byte, ap netip.AddrPort, txid [16]byte) []byte {
	n := 4
	if ap.Addr().Unmap().Is6() {
		n = 16
	}
	dst = appendAddr(dst, stun.AttrXORMappedAddress, ap)
	v := dst[len(dst)-4-n:]
	binary.BigEndian.PutUint16(v[2:4], ap.Port()^uint16(magicCookie>>16))
	binary.BigEndian.PutUint32(txid[0:4], magicCookie)
	for i := range v[4:] {
		v[4+i] ^= txid[i]
	}
	return dst
}

// softwareAttr is the encoded SOFTWARE attribute, padded with zeros, or nil
// when sw is longer than RFC 5389 allows (763 bytes).
func softwareAttr(sw string) []byte {
	if len(sw) > 763 {
		return nil
	}
	b := binary.BigEndian.AppendUint16(nil, uint16(stun.AttrSoftware))
	b = binary.BigEndian.AppendUint16(b, uint16(len(sw)))
	b = append(b, sw...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// errorReply builds an error response with the given code.
func (h *Handler) errorReply(req request, rep Reply, code stun.ErrorCode, unknown []stun.AttrType) Reply {
	m := newResponse(req, stun.NewType(stun.Method(req.method), stun.ClassErrorResponse))
	setters := []stun.Setter{code}
	if len(unknown) > 0 {
		setters = append(setters, stun.UnknownAttributes(unknown))
	}
	if h.software != "" {
		setters = append(setters, stun.NewSoftware(h.software))
	}
	if err := m.Build(setters...); err != nil {
		return Reply{}
	}
	rep.Raw, rep.Error = finish(m, req), true
	return rep
}

func newResponse(req request, t stun.MessageType) *stun.Message {
	m := stun.New()
	m.Type = t
	copy(m.TransactionID[:], req.txid[4:])
	m.WriteHeader()
	return m
}

// finish restores an RFC 3489 client's full transaction ID (pion always
// writes the magic cookie) and appends FINGERPRINT for RFC 5389 clients;
// classic clients get none, as they predate it.
func finish(m *stun.Message, req request) []byte {
	m.WriteHeader()
	if req.classic {
		copy(m.Raw[4:8], req.txid[:4])
		return append([]byte(nil), m.Raw...)
	}
	if err := stun.Fingerprint.AddTo(m); err != nil {
		return nil
	}
	return append([]byte(nil), m.Raw...)
}

// String describes the plan in one line for logs.
func (a Addrs) String() string {
	s := fmt.Sprintf("primary %s", a.Primary)
	if a.AltIP.IsValid() {
		s += fmt.Sprintf(", alternate IP %s", a.AltIP)
	}
	if a.AltPort != 0 {
		s += fmt.Sprintf(", alternate port %d", a.AltPort)
	}
	return s
}
