package lab

// UpSchema versions the JSON document of `natlab lab up`.
const UpSchema = "natlab.lab-up/v1"

// State describes a lab held by a process: what `natlab lab up` prints
// and what `exec` and `down` find by name.
type State struct {
	Schema        string      `json:"schema"`         // UpSchema
	NatlabVersion string      `json:"natlab_version"` // the build that wrote it
	Name          string      `json:"name"`           // pass it to exec and down
	Backend       string      `json:"backend"`        // "kernel"
	Server        []string    `json:"server"`         // natlab serve's sockets (STUN, rendezvous, TURN): primary, alternate port, alternate IP, both
	Sites         []StateSite `json:"sites"`
	PID           int         `json:"pid"` // the process holding the lab
	// Namespaces are the network namespaces `exec` runs programs in, by
	// host: "server", then each site's name.
	Namespaces map[string]string `json:"namespaces"`
}

// StateSite is one site of a held lab.
type StateSite struct {
	Name    string  `json:"name"`   // "a", "b"
	Preset  string  `json:"preset"` // its NAT preset
	Host    string  `json:"host"`   // the host's (private) address
	Public  string  `json:"public"` // the address the site shows to the internet
	DelayMS float64 `json:"delay_ms,omitempty"`
	Loss    float64 `json:"loss,omitempty"`
}
