// Package natclass discovers how the NAT in front of a host behaves (RFC 5780)
// and names it (RFC 3489, RFC 4787 vocabulary).
package natclass

import (
	"encoding/json"
	"fmt"
)

// Behavior is an RFC 4787 mapping or filtering behaviour. The empty value
// means the behaviour could not be determined.
type Behavior string

// The three RFC 4787 behaviours; the strings are part of the JSON schema.
const (
	EndpointIndependent     Behavior = "endpoint-independent"
	AddressDependent        Behavior = "address-dependent"
	AddressAndPortDependent Behavior = "address-and-port-dependent"
)

// NATType is the classic RFC 3489 name, derived from the RFC 5780 results.
type NATType string

// Classic names; the strings are part of the JSON schema.
const (
	Open               NATType = "open"
	FullCone           NATType = "full-cone"
	RestrictedCone     NATType = "restricted-cone"
	PortRestrictedCone NATType = "port-restricted-cone"
	Symmetric          NATType = "symmetric"
	SymmetricFirewall  NATType = "symmetric-firewall"
	UDPBlocked         NATType = "udp-blocked"
	Unknown            NATType = "unknown"
)

// Allocation is how a NAT picks external ports for new mappings.
type Allocation string

// Port allocation patterns; the strings are part of the JSON schema.
const (
	Preserving Allocation = "preserving" // external port equals the local port
	Sequential Allocation = "sequential" // each new mapping takes the previous port plus a step
	Random     Allocation = "random"     // no pattern a peer could predict
)

// ClassicName derives the RFC 3489 name from the RFC 5780 results.
// nat reports whether the mapped address differs from the local one.
// An undetermined behaviour yields Unknown rather than a guess.
func ClassicName(nat bool, mapping, filtering Behavior) NATType {
	if !nat {
		switch filtering {
		case EndpointIndependent:
			return Open
		case AddressDependent, AddressAndPortDependent:
			return SymmetricFirewall
		}
		return Unknown
	}
	switch mapping {
	case "":
		return Unknown
	case AddressDependent, AddressAndPortDependent:
		return Symmetric
	}
	switch filtering {
	case EndpointIndependent:
		return FullCone
	case AddressDependent:
		return RestrictedCone
	case AddressAndPortDependent:
		return PortRestrictedCone
	}
	return Unknown
}

// Tri is a tri-state answer: yes, no, or not checked. It keeps "unknown"
// apart from "no" and encodes as true, false or null in JSON.
type Tri int8

// Tri values. The zero value is NotChecked.
const (
	NotChecked Tri = iota
	Yes
	No
)

// TriOf turns a definite answer into a Tri.
func TriOf(b bool) Tri {
	if b {
		return Yes
	}
	return No
}

func (t Tri) String() string {
	switch t {
	case Yes:
		return "yes"
	case No:
		return "no"
	}
	return "not checked"
}

// MarshalJSON encodes Yes as true, No as false and NotChecked as null.
func (t Tri) MarshalJSON() ([]byte, error) {
	switch t {
	case Yes:
		return []byte("true"), nil
	case No:
		return []byte("false"), nil
	}
	return []byte("null"), nil
}

// UnmarshalJSON is the inverse of MarshalJSON.
func (t *Tri) UnmarshalJSON(b []byte) error {
	var v *bool
	if err := json.Unmarshal(b, &v); err != nil {
		return fmt.Errorf("tri-state: %w", err)
	}
	switch {
	case v == nil:
		*t = NotChecked
	case *v:
		*t = Yes
	default:
		*t = No
	}
	return nil
}

// Abbrev shortens a behaviour to the letters engineers use, with suffix
// "M" (mapping) or "F" (filtering): EIM, ADF, APDF; "?" plus the suffix
// when undetermined.
func (b Behavior) Abbrev(suffix string) string {
	switch b {
	case EndpointIndependent:
		return "EI" + suffix
	case AddressDependent:
		return "AD" + suffix
	case AddressAndPortDependent:
		return "APD" + suffix
	}
	return "?" + suffix
}
