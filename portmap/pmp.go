package portmap

// NAT-PMP (RFC 6886) and PCP (RFC 6887) share the gateway's UDP port 5351
// and the request/response pattern: one datagram each way, retransmitted
// with doubling intervals until an answer or the deadline.

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"
)

const (
	// pmpPort is the gateway port of NAT-PMP and PCP.
	pmpPort = 5351
	// pmpRTO is the first retransmission interval, RFC 6886 §3.1's 250 ms
	// (PCP's 3 s is for background renewals, not an interactive check);
	// it doubles after each try.
	pmpRTO = 250 * time.Millisecond
	// pmpMaxDatagram bounds what is read: the largest PCP response with
	// options is 1100 bytes (RFC 6887 §7).
	pmpMaxDatagram = 1100
)

// NAT-PMP opcodes and sizes.
const (
	pmpOpExternal   = 0
	pmpOpMapUDP     = 1
	pmpReplyBit     = 0x80
	pmpExternalSize = 12
	pmpMapSize      = 16
)

// PCP constants.
const (
	pcpVersion    = 2
	pcpOpAnnounce = 0
	pcpOpMap      = 1
	pcpHeaderSize = 24
	pcpMapSize    = 36
	pcpNonceSize  = 12
	protoUDP      = 17
)

// pmpResultText are NAT-PMP's result codes (RFC 6886 §3.5).
var pmpResultText = map[uint16]string{
	1: "unsupported version", 2: "not authorized or refused", 3: "network failure",
	4: "out of resources", 5: "unsupported opcode",
}

// pcpResultText are PCP's result codes (RFC 6887 §7.4).
var pcpResultText = map[byte]string{
	1: "UNSUPP_VERSION", 2: "NOT_AUTHORIZED", 3: "MALFORMED_REQUEST", 4: "UNSUPP_OPCODE",
	5: "UNSUPP_OPTION", 6: "MALFORMED_OPTION", 7: "NETWORK_FAILURE", 8: "NO_RESOURCES",
	9: "UNSUPP_PROTOCOL", 10: "USER_EX_QUOTA", 11: "CANNOT_PROVIDE_EXTERNAL",
	12: "ADDRESS_MISMATCH", 13: "EXCESSIVE_REMOTE_PEERS",
}

// ResultError is a gateway's refusal, with the protocol's result code.
type ResultError struct {
	Protocol Protocol
	Code     int
	Text     string
}

func (e *ResultError) Error() string {
	return fmt.Sprintf("%s result %d (%s)", e.Protocol, e.Code, e.Text)
}

// errSilent is wrapped when the gateway never answered.
var errSilent = errors.New("no answer")

// exchange sends req to the gateway's port 5351 from a fresh connected
// socket until an answer for which accept returns true arrives or ctx
// ends. The socket is connected so that the gateway's ICMP port
// unreachable ends the wait at once (errRefused): a router without a
// NAT-PMP/PCP server says so in one round trip.
func (c *Client) exchange(ctx context.Context, req []byte, accept func([]byte) bool) ([]byte, error) {
	gw := netip.AddrPortFrom(c.gw, pmpPort)
	conn, err := c.net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(gw))
	if err != nil {
		return nil, fmt.Errorf("open socket: %w", err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	buf := make([]byte, pmpMaxDatagram)
	r := c.resender(pmpRTO)
	for {
		if r.due() {
			if _, err := conn.Write(req); err != nil && !isRefused(err) {
				return nil, fmt.Errorf("send to %v: %w", gw, err)
			}
		}
		_ = conn.SetReadDeadline(r.next())
		n, err := conn.Read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("%w from %v: %w", errSilent, gw, context.Cause(ctx))
			}
			var ne net.Error
			switch {
			case isRefused(err):
				return nil, fmt.Errorf("%w from %v", errRefused, gw)
			case errors.As(err, &ne) && ne.Timeout():
				continue
			}
			return nil, fmt.Errorf("read from %v: %w", gw, err)
		}
		if accept(buf[:n]) {
			return append([]byte(nil), buf[:n]...), nil
		}
	}
}

// pmpExternal asks NAT-PMP for the external address.
func (c *Client) pmpExternal(ctx context.Context) (netip.Addr, error) {
	resp, err := c.exchange(ctx, []byte{0, pmpOpExternal}, func(b []byte) bool {
		return len(b) >= 4 && b[0] == 0 && b[1] == pmpReplyBit|pmpOpExternal
	})
	if err != nil {
		return netip.Addr{}, err
	}
	if err := pmpResult(resp); err != nil {
		return netip.Addr{}, err
	}
	if len(resp) < pmpExternalSize {
		return netip.Addr{}, fmt.Errorf("nat-pmp: short external address response (%d bytes)", len(resp))
	}
	return netip.AddrFrom4([4]byte(resp[8:12])), nil
}

func pmpResult(b []byte) error {
	if code := binary.BigEndian.Uint16(b[2:4]); code != 0 {
		return &ResultError{Protocol: NATPMP, Code: int(code), Text: pmpResultText[code]}
	}
	return nil
}

// pmpRequest maps (lifetime > 0) or deletes (lifetime 0) a UDP mapping.
func (c *Client) pmpRequest(ctx context.Context, internal, suggested uint16, secs uint32) (ext uint16, life uint32, err error) {
	req := make([]byte, 12)
	req[1] = pmpOpMapUDP
	binary.BigEndian.PutUint16(req[4:], internal)
	binary.BigEndian.PutUint16(req[6:], suggested)
	binary.BigEndian.PutUint32(req[8:], secs)
	resp, err := c.exchange(ctx, req, func(b []byte) bool {
		return len(b) >= 4 && b[0] == 0 && b[1] == pmpReplyBit|pmpOpMapUDP &&
			(len(b) < pmpMapSize || binary.BigEndian.Uint16(b[8:10]) == internal)
	})
	if err != nil {
		return 0, 0, err
	}
	if err := pmpResult(resp); err != nil {
		return 0, 0, err
	}
	if len(resp) < pmpMapSize {
		return 0, 0, fmt.Errorf("nat-pmp: short mapping response (%d bytes)", len(resp))
	}
	return binary.BigEndian.Uint16(resp[10:12]), binary.BigEndian.Uint32(resp[12:16]), nil
}

func (c *Client) pmpMap(ctx context.Context, m *Mapping, internal uint16, secs uint32) error {
	ext, err := c.pmpExternal(ctx)
	if err != nil {
		return err
	}
	port, life, err := c.pmpRequest(ctx, internal, internal, secs)
	if err != nil {
		return err
	}
	if port == 0 || life == 0 {
		return errors.New("nat-pmp: gateway granted no mapping")
	}
	m.External = netip.AddrPortFrom(ext, port)
	m.Lifetime = time.Duration(life) * time.Second
	return nil
}

func (c *Client) pmpUnmap(ctx context.Context, m Mapping) error {
	_, _, err := c.pmpRequest(ctx, m.Internal.Port(), 0, 0)
	return err
}

// pcpHeader builds a PCP request header.
func (c *Client) pcpHeader(op byte, secs uint32) []byte {
	b := make([]byte, pcpHeaderSize, pcpHeaderSize+pcpMapSize)
	b[0] = pcpVersion
	b[1] = op
	binary.BigEndian.PutUint32(b[4:], secs)
	a := c.local.As16() // an IPv4 address comes out IPv4-mapped, as RFC 6887 §5 wants
	copy(b[8:24], a[:])
	return b
}

func pcpAccept(op byte) func([]byte) bool {
	return func(b []byte) bool {
		// A NAT-PMP-only gateway answers a version 2 request with a
		// version 0 "unsupported version": accept it to fail fast.
		if len(b) >= 4 && b[0] == 0 {
			return true
		}
		return len(b) >= pcpHeaderSize && b[0] == pcpVersion && b[1] == 0x80|op
	}
}

func pcpResult(b []byte) error {
	if b[0] != pcpVersion {
		return &ResultError{Protocol: PCP, Code: 1, Text: "UNSUPP_VERSION (the gateway speaks NAT-PMP only)"}
	}
	if code := b[3]; code != 0 {
		return &ResultError{Protocol: PCP, Code: int(code), Text: pcpResultText[code]}
	}
	return nil
}

// pcpAnnounce checks that the gateway speaks PCP without creating state.
func (c *Client) pcpAnnounce(ctx context.Context) error {
	resp, err := c.exchange(ctx, c.pcpHeader(pcpOpAnnounce, 0), pcpAccept(pcpOpAnnounce))
	if err != nil {
		return err
	}
	return pcpResult(resp)
}

// pcpRequest sends a MAP request for UDP; lifetime 0 deletes.
func (c *Client) pcpRequest(ctx context.Context, nonce [pcpNonceSize]byte, internal uint16, suggested netip.AddrPort, secs uint32) (netip.AddrPort, uint32, error) {
	req := c.pcpHeader(pcpOpMap, secs)
	op := make([]byte, pcpMapSize)
	copy(op, nonce[:])
	op[12] = protoUDP
	binary.BigEndian.PutUint16(op[16:], internal)
	binary.BigEndian.PutUint16(op[18:], suggested.Port())
	sip := [16]byte{10: 0xff, 11: 0xff} // ::ffff:0.0.0.0, no preference
	if suggested.Addr().Is4() {
		v4 := suggested.Addr().As4()
		copy(sip[12:], v4[:])
	}
	copy(op[20:], sip[:])
	req = append(req, op...)
	accept := pcpAccept(pcpOpMap)
	resp, err := c.exchange(ctx, req, func(b []byte) bool {
		if !accept(b) {
			return false
		}
		// The nonce ties the answer to this request (RFC 6887 §11.3).
		return b[0] != pcpVersion || len(b) < pcpHeaderSize+pcpMapSize ||
			string(b[pcpHeaderSize:pcpHeaderSize+pcpNonceSize]) == string(nonce[:])
	})
	if err != nil {
		return netip.AddrPort{}, 0, err
	}
	if err := pcpResult(resp); err != nil {
		return netip.AddrPort{}, 0, err
	}
	if len(resp) < pcpHeaderSize+pcpMapSize {
		return netip.AddrPort{}, 0, fmt.Errorf("pcp: short MAP response (%d bytes)", len(resp))
	}
	life := binary.BigEndian.Uint32(resp[4:8])
	o := resp[pcpHeaderSize:]
	ip := netip.AddrFrom16([16]byte(o[20:36])).Unmap()
	return netip.AddrPortFrom(ip, binary.BigEndian.Uint16(o[18:20])), life, nil
}

func (c *Client) pcpMap(ctx context.Context, m *Mapping, internal uint16, secs uint32) error {
	if _, err := rand.Read(m.nonce[:]); err != nil {
		return fmt.Errorf("pcp nonce: %w", err)
	}
	ext, life, err := c.pcpRequest(ctx, m.nonce, internal, netip.AddrPortFrom(netip.Addr{}, internal), secs)
	if err != nil {
		return err
	}
	if ext.Port() == 0 || life == 0 {
		return errors.New("pcp: gateway granted no mapping")
	}
	m.External = ext
	m.Lifetime = time.Duration(life) * time.Second
	return nil
}

func (c *Client) pcpUnmap(ctx context.Context, m Mapping) error {
	_, _, err := c.pcpRequest(ctx, m.nonce, m.Internal.Port(), m.External, 0)
	return err
}
