package natclass

// Technique names a way to establish a path, in order of preference. The
// strings are part of the JSON schema.
type Technique string

// Direct techniques, most preferred first.
const (
	SameLAN    Technique = "same-lan"     // host candidates on one LAN
	DirectUDP  Technique = "udp"          // simultaneous punching to srflx, answering peer-reflexive
	PredictUDP Technique = "udp-predict"  // port prediction for a sequential allocator
	Birthday   Technique = "udp-birthday" // birthday probing against a random allocator
	MappedUDP  Technique = "udp-portmap"  // a port mapped on the gateway (UPnP-IGD, NAT-PMP, PCP)
	DirectTCP  Technique = "tcp"          // TCP simultaneous open
)

// Relay techniques, after the direct ones.
const (
	RelayUDP Technique = "relay-udp" // TURN, client to server over UDP
	RelayTCP Technique = "relay-tcp" // TURN over TCP or TLS (UDP relayed by the server)
)

// Techniques lists the direct techniques in order of preference: the ones
// Predict predicts and a probe punches.
var Techniques = []Technique{SameLAN, DirectUDP, PredictUDP, Birthday, MappedUDP, DirectTCP}

// TechniqueInfo is everything a view or a verdict says about a technique.
type TechniqueInfo struct {
	ID Technique
	// Name is the long name a verdict uses: "UDP hole punch".
	Name string
	// Short fits a matrix cell: "udp".
	Short string
	// Relay is true for the TURN techniques, false for direct paths.
	Relay bool
	// Transport is what the peers' traffic travels over end to end: "udp"
	// or "tcp" (relay-tcp carries UDP from the relay on, but reaches it
	// over TCP, which is what the name says).
	Transport string
}

// techniqueTable is the one vocabulary: the verdict, the TUI, the text
// views and metrics all read it.
var techniqueTable = []TechniqueInfo{
	{SameLAN, "same-LAN direct", "lan", false, "udp"},
	{DirectUDP, "UDP hole punch", "udp", false, "udp"},
	{PredictUDP, "UDP hole punch with port prediction", "pred", false, "udp"},
	{Birthday, "UDP birthday probing", "bday", false, "udp"},
	{MappedUDP, "UDP through a port mapped on the gateway", "pmap", false, "udp"},
	{DirectTCP, "TCP simultaneous open", "tcp", false, "tcp"},
	{RelayUDP, "TURN relay over UDP", "relay", true, "udp"},
	{RelayTCP, "TURN relay over TCP or TLS", "rtcp", true, "tcp"},
}

// AllTechniques is every technique in the table's order: direct ones by
// preference, then the relays.
func AllTechniques() []TechniqueInfo { return append([]TechniqueInfo(nil), techniqueTable...) }

// Info is t's row of the table; an unknown technique gets its own string
// as both names, so a view never prints an empty word.
func (t Technique) Info() TechniqueInfo {
	for _, i := range techniqueTable {
		if i.ID == t {
			return i
		}
	}
	return TechniqueInfo{ID: t, Name: string(t), Short: string(t)}
}

// Name is the long name a verdict uses.
func (t Technique) Name() string { return t.Info().Name }

// Short is the name in a matrix cell.
func (t Technique) Short() string { return t.Info().Short }

// IsRelay reports whether t is a TURN relay technique.
func (t Technique) IsRelay() bool { return t.Info().Relay }
