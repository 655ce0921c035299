// Package holepunch establishes a direct path between two peers that already
// know each other's candidates and share a session secret: UDP simultaneous
// punching (host candidates first), port prediction for sequential
// allocators, birthday probing for random ones and TCP simultaneous open.
// Every probe is authenticated, so a stray or forged packet never counts,
// and every socket comes from a transport.Net, so the same code runs on the
// lab backends and on the real stack.
package holepunch

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/natlab/natlab/internal/millis"
	"github.com/natlab/natlab/natclass"
)

// Kind says where a candidate address comes from (ICE vocabulary).
type Kind string

// Candidate kinds; the strings are part of the JSON schema.
const (
	Host      Kind = "host"      // an address of the peer's own interface
	Srflx     Kind = "srflx"     // the peer's mapping as a STUN server saw it
	Predicted Kind = "predicted" // a port the peer's sequential allocator should hand out next
	Prflx     Kind = "prflx"     // learned from where an authenticated packet actually came from
)

// Candidate is one address at which the peer may be reachable.
type Candidate struct {
	Kind Kind           `json:"kind"`
	Addr netip.AddrPort `json:"addr"`
}

func (c Candidate) String() string { return string(c.Kind) + " " + c.Addr.String() }

// Side tells the two ends of a session apart, so that a side never takes
// its own probe (reflected by a hairpinning NAT) for the peer's.
type Side byte

// The two sides.
const (
	SideA Side = 'A'
	SideB Side = 'B'
)

func (s Side) String() string { return string(rune(s)) }

// Other returns the peer's side.
func (s Side) Other() Side {
	if s == SideA {
		return SideB
	}
	return SideA
}

// KeySize is the size of a session's shared key: a full HMAC-SHA256 key.
const KeySize = 32

// Session is what both peers share before punching: an identifier, a secret
// key and which side each one is. The rendezvous hands it out.
type Session struct {
	ID   [8]byte
	Key  [KeySize]byte
	Side Side
}

// NewSession returns a random session seen from side A; the peer uses
// s.Peer().
func NewSession() (Session, error) {
	var s Session
	if _, err := rand.Read(s.ID[:]); err != nil {
		return Session{}, fmt.Errorf("session id: %w", err)
	}
	if _, err := rand.Read(s.Key[:]); err != nil {
		return Session{}, fmt.Errorf("session key: %w", err)
	}
	s.Side = SideA
	return s, nil
}

// Peer returns the same session seen from the other side.
func (s Session) Peer() Session {
	s.Side = s.Side.Other()
	return s
}

func (s Session) valid() error {
	if s.Side != SideA && s.Side != SideB {
		return fmt.Errorf("session side %q: want A or B", s.Side)
	}
	if s.Key == [KeySize]byte{} {
		return errors.New("session key is all zero")
	}
	return nil
}

// Result is the measurement of one punching attempt.
type Result struct {
	Technique natclass.Technique `json:"technique"`
	Success   bool               `json:"success"`
	Local     netip.AddrPort     `json:"local,omitzero"`  // our socket's address
	Mapped    netip.AddrPort     `json:"mapped,omitzero"` // our address as the peer saw it
	Remote    netip.AddrPort     `json:"remote,omitzero"` // the peer's address on the path
	// Attempts is the number of probe packets (or TCP connect attempts) sent.
	Attempts int `json:"attempts"`
	// TimeToFirstPacket is from the start to the first authenticated packet
	// received from the peer.
	TimeToFirstPacket time.Duration `json:"-"`
	// RTT is the round trip of the ping whose pong confirmed the path.
	RTT time.Duration `json:"-"`
	// Duration is the wall time of the attempt.
	Duration time.Duration `json:"-"`
	// Err says why there is no path.
	Err error `json:"-"`
}

// MarshalJSON writes durations as milliseconds and the error as text, like
// the rest of natlab's documents.
func (r Result) MarshalJSON() ([]byte, error) {
	type plain Result
	v := struct {
		plain
		TimeToFirstPacketMillis float64 `json:"time_to_first_packet_ms,omitempty"`
		RTTMillis               float64 `json:"rtt_ms,omitempty"`
		DurationMillis          float64 `json:"duration_ms"`
		Error                   string  `json:"error,omitempty"`
	}{plain: plain(r), TimeToFirstPacketMillis: millis.Of(r.TimeToFirstPacket), RTTMillis: millis.Of(r.RTT), DurationMillis: millis.Of(r.Duration)}
	if r.Err != nil {
		v.Error = r.Err.Error()
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("holepunch result: %w", err)
	}
	return b, nil
}

// ErrNoPath is returned (wrapped) when no path was confirmed before the
// deadline.
var ErrNoPath = errors.New("no direct path")
