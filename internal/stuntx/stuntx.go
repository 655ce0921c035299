// Package stuntx is natlab's one STUN client transaction: it builds
// Binding requests (CHANGE-REQUEST and RESPONSE-PORT one way), sends them
// over a datagram socket on a retransmission schedule (doubling from an
// RTO before the RTT is known, spaced by the measured RTT after) or once
// over a stream, and returns the matching answer. pion/stun encodes and
// decodes every byte.
package stuntx

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/pion/stun/v3"
)

// ErrTimeout means no answer arrived within the schedule.
var ErrTimeout = errors.New("no response")

// ServerError is a STUN error response (for example 420 to a
// CHANGE-REQUEST the server cannot honour).
type ServerError struct {
	Code   int
	Reason string
}

func (e *ServerError) Error() string { return fmt.Sprintf("server error %d %s", e.Code, e.Reason) }

// Request builds a Binding request: a fresh transaction ID, the given
// attributes, FINGERPRINT last.
func Request(attrs ...stun.Setter) (*stun.Message, error) {
	all := append([]stun.Setter{stun.TransactionID, stun.BindingRequest}, attrs...)
	m, err := stun.Build(append(all, stun.Fingerprint)...)
	if err != nil {
		return nil, fmt.Errorf("build binding request: %w", err)
	}
	return m, nil
}

// ChangeRequest is RFC 5780's CHANGE-REQUEST attribute (§7.2): the flags
// ask the server to answer from its other IP, its other port, or both.
type ChangeRequest uint32

// CHANGE-REQUEST flags.
const (
	ChangePort ChangeRequest = 0x02
	ChangeIP   ChangeRequest = 0x04
)

// AddTo adds the attribute to m.
func (c ChangeRequest) AddTo(m *stun.Message) error {
	m.Add(stun.AttrChangeRequest, []byte{byte(c >> 24), byte(c >> 16), byte(c >> 8), byte(c)})
	return nil
}

// ResponsePort is RFC 5780's RESPONSE-PORT attribute (§7.5): the server
// answers to this port instead of the request's source port.
type ResponsePort uint16

// AddTo adds the attribute to m (the port, then two bytes of padding).
func (p ResponsePort) AddTo(m *stun.Message) error {
	m.Add(stun.AttrResponsePort, []byte{byte(p >> 8), byte(p), 0, 0})
	return nil
}

// Answer is a response to a transaction.
type Answer struct {
	Msg  *stun.Message
	From netip.AddrPort // where it came from (the server's address for a stream)
	// RTT is the time since the first transmission.
	RTT time.Duration
	// Via says which of the caller's sockets it arrived on, for callers
	// that listen on several.
	Via any
}

// Mapped is the answer's XOR-MAPPED-ADDRESS, or MAPPED-ADDRESS from
// servers that only speak RFC 3489.
func Mapped(m *stun.Message) (netip.AddrPort, bool) {
	var x stun.XORMappedAddress
	if err := x.GetFrom(m); err == nil {
		return addrPort(x.IP, x.Port)
	}
	var a stun.MappedAddress
	if err := a.GetFrom(m); err == nil {
		return addrPort(a.IP, a.Port)
	}
	return netip.AddrPort{}, false
}

// Other is the answer's OTHER-ADDRESS, or RFC 3489's CHANGED-ADDRESS.
func Other(m *stun.Message) (netip.AddrPort, bool) {
	var o stun.OtherAddress
	if err := o.GetFrom(m); err == nil {
		return addrPort(o.IP, o.Port)
	}
	return AddrAttr(m, stun.AttrChangedAddress)
}

// AddrAttr reads an attribute encoded like MAPPED-ADDRESS.
func AddrAttr(m *stun.Message, t stun.AttrType) (netip.AddrPort, bool) {
	var a stun.MappedAddress
	if err := a.GetFromAs(m, t); err != nil {
		return netip.AddrPort{}, false
	}
	return addrPort(a.IP, a.Port)
}

func addrPort(ip net.IP, port int) (netip.AddrPort, bool) {
	a, ok := netip.AddrFromSlice(ip)
	if !ok || port <= 0 || port > 65535 {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(port)), true
}

// asError is m's error response as a *ServerError, or nil for a success.
func asError(m *stun.Message) error {
	if m.Type.Class != stun.ClassErrorResponse {
		return nil
	}
	var ec stun.ErrorCodeAttribute
	if err := ec.GetFrom(m); err != nil {
		return &ServerError{Reason: "without ERROR-CODE"}
	}
	return &ServerError{Code: int(ec.Code), Reason: string(ec.Reason)}
}

// Schedule is when a request is (re)transmitted, relative to the first
// transmission, and when to give up.
type Schedule struct {
	Sends  []time.Duration
	GiveUp time.Duration
}

// Backoff is the schedule before the RTT is known (RFC 5389 §7.2.1): the
// first retransmission after rto, each later one after twice the wait
// before, until total.
func Backoff(rto, total time.Duration) Schedule {
	var sends []time.Duration
	for t := time.Duration(0); t < total; t, rto = t+rto, rto*2 {
		sends = append(sends, t)
	}
	return Schedule{Sends: sends, GiveUp: total}
}

// RTTWait is how long one attempt waits once the RTT to the server is
// known: rtts round trips, at least floor (on a LAN the RTT is below the
// scheduler's jitter).
func RTTWait(rtt time.Duration, rtts int, floor time.Duration) time.Duration {
	return max(time.Duration(rtts)*rtt, floor)
}

// Spaced is the schedule once the RTT is known: attempts transmissions
// wait apart, giving up one wait after the last.
func Spaced(attempts int, wait time.Duration) Schedule {
	s := Schedule{GiveUp: time.Duration(attempts) * wait}
	for i := range attempts {
		s.Sends = append(s.Sends, time.Duration(i)*wait)
	}
	return s
}

// Transact is the one retransmission loop: it transmits req with send on
// schedule sch and returns the first answer from answers (which carry
// only this transaction's responses), with its RTT since the first
// transmission. An error response is returned with a *ServerError.
func Transact(ctx context.Context, req *stun.Message, sch Schedule, send func([]byte) error, answers <-chan Answer) (Answer, error) {
	if len(sch.Sends) == 0 {
		return Answer{}, errors.New("stuntx: empty schedule")
	}
	start := time.Now()
	giveUp := time.NewTimer(sch.GiveUp)
	defer giveUp.Stop()
	retx := time.NewTimer(0)
	defer retx.Stop()
	<-retx.C
	for next := 0; ; {
		if next < len(sch.Sends) {
			if err := send(req.Raw); err != nil {
				return Answer{}, err
			}
			if next++; next < len(sch.Sends) {
				retx.Reset(sch.Sends[next] - time.Since(start))
			}
		}
		select {
		case a := <-answers:
			a.RTT = time.Since(start)
			return a, asError(a.Msg)
		case <-retx.C:
		case <-giveUp.C:
			return Answer{}, ErrTimeout
		case <-ctx.Done():
			return Answer{}, ctx.Err()
		}
	}
}
