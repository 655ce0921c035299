package probe

import (
	"time"

	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/rendezvous"
)

// Stage names a part of a run in events; the strings are part of the
// JSON schema of --events.
type Stage string

// The probe's stages, in order. Package lab adds its own (lab, site,
// matrix).
const (
	StageProfile   Stage = "profile"   // this host's NAT profile and port mapping
	StagePair      Stage = "pair"      // the pairing code, then the peer
	StagePath      Stage = "path"      // this side's trace toward the peer's public address
	StageTechnique Stage = "technique" // one technique started or finished
	StageRelay     Stage = "relay"     // the TURN relay stage
	StageLifetime  Stage = "lifetime"  // with Options.Lifetime: this host's binding lifetimes and keepalive
	StageVerdict   Stage = "verdict"   // what to use
)

// Event is one step of progress, for live views and --events. Views read
// Data by its type, never the message:
//
//	profile:   *natclass.Profile, *portmap.Report
//	pair:      PairingCode (once the code is registered), natclass.Summary (the peer)
//	path:      natclass.PeerPath
//	technique: natclass.Prediction when it starts, TechniqueResult when done (Outcome set)
//	relay:     RelayReport when done
//	lifetime:  *Keepalive when measured
//	verdict:   Verdict
type Event struct {
	Time    time.Time `json:"time"`
	Stage   Stage     `json:"stage"`
	Message string    `json:"message"`        // one line for people
	Data    any       `json:"data,omitempty"` // the stage's result
	Elapsed float64   `json:"elapsed_ms"`     // since the run started
	Side    string    `json:"side,omitempty"` // A or B, once paired
	Step    int       `json:"step,omitempty"` // technique number (within its family's plan)
	// Family is "ipv6" for the IPv6 plan's technique events (Step
	// numbers that plan's techniques); empty for IPv4's.
	Family  string           `json:"family,omitempty"`
	Outcome natclass.Outcome `json:"outcome,omitempty"` // set when a technique finishes
}

// PairingCode is the Data of the pair event sent once the server has
// registered this probe's code: what the person at the other host needs.
type PairingCode struct {
	Code   string          `json:"code"`
	Server string          `json:"server"` // natlab serve's address, as given
	Mode   rendezvous.Mode `json:"mode"`   // create: the peer joins; meet: the peer passes the same code
}
