// Package rendezvous pairs two natlab probes through the public server.
//
// The protocol is JSON datagrams over UDP on the server's STUN port: a JSON
// object starts with '{' (0x7b), whose top two bits are not zero, so it
// can never be mistaken for a STUN message. UDP (rather than a TCP or HTTP
// channel) keeps the in-process lab, which has no TCP, able to run it.
//
// A pairing has exactly two peers. The first registers a code (random,
// 80 bits, made by the client), the second joins it; with a pre-shared code
// both "meet". The server carries each peer's info (profile, candidates)
// to the other, then acts as a barrier for numbered steps: a peer reports
// step k with its data, and once both have, the server sends both a "go"
// carrying the other's data, delaying the nearer peer by half the
// difference of their round trips so that both start together (as
// libp2p's DCUtR does with a measured RTT). Nothing is exposed to anyone
// who does not hold the code.
package rendezvous

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Version is the protocol version; a peer speaking another gets an error.
const Version = 1

// Message types.
const (
	TypeCreate = "create" // register a new code (first peer)
	TypeJoin   = "join"   // join an existing code (second peer)
	TypeMeet   = "meet"   // pre-shared code: create or join
	TypeWait   = "wait"   // server: registered, the other peer is not there yet
	TypePeer   = "peer"   // server: here is the other peer's info
	TypeStep   = "step"   // peer: I am ready for step k, with data
	TypeGo     = "go"     // server: both are ready for step k; here is the other's data
	TypeBye    = "bye"    // peer: I am done (or giving up)
	TypeError  = "error"  // server: the request failed, see Error
)

// Limits of the protocol, each with why.
const (
	// MaxMessage bounds a datagram: well under a 1280-byte IPv6 minimum
	// MTU path would be nicer, but a profile with candidates needs more,
	// and 1400 still avoids fragmentation on any Ethernet path.
	MaxMessage = 1400
	// CodeTTL is how long a code stays valid: long enough for a person to
	// carry it to the second host, short enough that old codes die.
	CodeTTL = 10 * time.Minute
	// codeBytes is 80 bits of randomness: unguessable in a code's lifetime.
	codeBytes = 10
)

// Message is one rendezvous datagram.
type Message struct {
	V     int             `json:"v"`
	Type  string          `json:"t"`
	Code  string          `json:"code,omitempty"`
	Token string          `json:"token,omitempty"` // the sender's random peer token
	Info  json.RawMessage `json:"info,omitempty"`  // create/join/meet: own info; peer: the other's
	Peer  string          `json:"peer,omitempty"`  // peer: the other's token
	// Slot, in a peer message, is the recipient's place in the pairing:
	// 1 for the peer that entered it first, 2 for the one that joined
	// (0 from servers before it was added).
	Slot  int             `json:"slot,omitempty"`
	Step  int             `json:"step,omitempty"`
	RTT   float64         `json:"rtt_ms,omitempty"` // step: the sender's RTT to the server
	Data  json.RawMessage `json:"data,omitempty"`   // step: own data; go: the other's
	Error string          `json:"error,omitempty"`
	Pad   string          `json:"pad,omitempty"` // request padding to MinRequest bytes (see AmplificationFactor)
}

// IsRendezvous reports whether a datagram looks like a rendezvous message
// rather than STUN.
func IsRendezvous(b []byte) bool { return len(b) > 0 && b[0] == '{' }

// Encode marshals m, checking the size limit.
func Encode(m Message) ([]byte, error) {
	m.V = Version
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("rendezvous: encode: %w", err)
	}
	if len(b) > MaxMessage {
		return nil, fmt.Errorf("rendezvous: %s message is %d bytes, over the %d-byte limit", m.Type, len(b), MaxMessage)
	}
	return b, nil
}

// EncodeRequest is Encode padded to MinRequest bytes, so that the server
// may answer it in full without amplifying (see AmplificationFactor).
func EncodeRequest(m Message) ([]byte, error) {
	b, err := Encode(m)
	if err != nil || len(b) >= MinRequest {
		return b, err
	}
	const overhead = len(`,"pad":""`)
	m.Pad = strings.Repeat("0", max(MinRequest-len(b)-overhead, 0))
	return Encode(m)
}

// Decode parses a datagram.
func Decode(b []byte) (Message, error) {
	var m Message
	if len(b) > MaxMessage {
		return m, fmt.Errorf("rendezvous: %d-byte message over the limit", len(b))
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("rendezvous: malformed message: %w", err)
	}
	if m.V != Version {
		return m, fmt.Errorf("rendezvous: protocol version %d, want %d", m.V, Version)
	}
	return m, nil
}

var codeEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// NewCode returns a fresh random pairing code, shown as four groups of
// four letters and digits.
func NewCode() (string, error) {
	b := make([]byte, codeBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("pairing code: %w", err)
	}
	s := strings.ToLower(codeEncoding.EncodeToString(b))
	return s[0:4] + "-" + s[4:8] + "-" + s[8:12] + "-" + s[12:16], nil
}

// ErrBadCode is returned for a code that is not 16 base32 characters.
var ErrBadCode = errors.New("pairing code must be 16 letters a-z and digits 2-7 (dashes optional)")

// NormalizeCode strips dashes and spaces, lower-cases, and validates.
func NormalizeCode(code string) (string, error) {
	s := strings.ToLower(strings.NewReplacer("-", "", " ", "").Replace(code))
	if len(s) != 16 {
		return "", ErrBadCode
	}
	if _, err := codeEncoding.DecodeString(strings.ToUpper(s)); err != nil {
		return "", ErrBadCode
	}
	return s, nil
}

// newToken returns a random 128-bit peer token.
func newToken() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("peer token: %w", err)
	}
	return fmt.Sprintf("%x", b), nil
}
