package probe

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/transport/v4"

	"github.com/natlab/natlab/holepunch"
	"github.com/natlab/natlab/internal/buildinfo"
	"github.com/natlab/natlab/internal/millis"
	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/portmap"
	"github.com/natlab/natlab/rendezvous"
)

// ProbeSchema versions the JSON document of `natlab probe`.
const ProbeSchema = "natlab.probe/v1"

// Probe timing, each with why.
const (
	// DefaultPairTimeout is how long a probe waits for its peer: a person
	// has to carry the code to the second host and start it there.
	DefaultPairTimeout = 5 * time.Minute
	// stepTimeout bounds one barrier step once both peers are paired: a
	// technique takes at most DefaultBirthdayTimeout plus set-up, and a
	// peer that has not reached the barrier by then has vanished.
	stepTimeout = holepunch.DefaultBirthdayTimeout + 10*time.Second
	// punchTimeout bounds a UDP or TCP punch: cone pairs meet within a few
	// round trips, and a pair that cannot be punched must fail fast.
	punchTimeout = 3 * time.Second
)

// Options configure Run.
type Options struct {
	// Net opens every socket: the host's stack or a lab host's Net.
	Net transport.Net
	// Server is natlab serve's host:port (STUN and rendezvous).
	Server string
	// Server6, if set, is natlab serve's IPv6 address (host:port): the
	// probe then also punches over IPv6 when the peer can too.
	Server6 string
	// DNS64 is the resolver (host:port) asked for a NAT64 prefix (RFC
	// 7050) when Server is unreachable over IPv4; "" asks the system's.
	DNS64 string
	// Mode and Code: Create with an empty code makes a new one; Join and
	// Meet need the code.
	Mode rendezvous.Mode
	Code string
	// PairTimeout bounds the wait for the peer (DefaultPairTimeout).
	PairTimeout time.Duration
	// OnCode is called with the code once the server has registered it,
	// for the first peer to show it.
	OnCode func(code string)
	// Events, if set, receives progress as it happens; it must not block
	// for long (views buffer).
	Events func(Event)
	// Gateway is the router to ask for a port mapping; when invalid it is
	// guessed from the interfaces (portmap.DefaultGateway reads the host's
	// routing table).
	Gateway netip.Addr
	// NoPortMap skips the port-mapping probe.
	NoPortMap bool
	// Relay, if set, adds the relay stage: allocate on the TURN server,
	// measure relay and direct paths with the peer, and price the
	// difference. Both peers must set it (or neither).
	Relay *RelayConfig
	// Relay6 is the TURN relay over IPv6, for an IPv6 relayed address
	// measured beside the IPv4 relay when the IPv6 techniques run; nil
	// uses Relay's credentials on Server6. Only with Relay.
	Relay6 *RelayConfig
	// Lifetime measures this host's binding lifetimes once a direct UDP
	// path is found (up to LifetimeMax, natclass.DefaultLifetimeMax when
	// 0) and adds the keepalive it needs to the verdict.
	Lifetime    bool
	LifetimeMax time.Duration
	Logger      *slog.Logger
}

// TechniqueResult is one technique for this pair: predicted and measured.
type TechniqueResult struct {
	Technique natclass.Technique `json:"technique"`
	Predicted natclass.Outcome   `json:"predicted"`
	Reason    string             `json:"reason"`
	Measured  natclass.Outcome   `json:"measured"`
	// Attempts is the number of probe packets or connects this side sent.
	Attempts int `json:"attempts"`
	// TimeToFirstPacketMillis is from the synchronised start to the first
	// authenticated packet from the peer.
	TimeToFirstPacketMillis float64 `json:"time_to_first_packet_ms,omitempty"`
	// RTTMillis is the round trip on the direct path.
	RTTMillis float64 `json:"rtt_ms,omitempty"`
	// Remote is the peer's address on the path.
	Remote string `json:"remote,omitempty"`
	// Error says why it failed or was skipped.
	Error string `json:"error,omitempty"`
}

// Verdict is the line a person reads first.
type Verdict struct {
	Direct    bool               `json:"direct"`              // a direct path works
	Technique natclass.Technique `json:"technique,omitempty"` // the one an application should use
	Summary   string             `json:"summary"`             // in words
	// Family is the address family to use ("ipv4" or "ipv6") when both
	// were probed (Options.Server6).
	Family string `json:"family,omitempty"`
}

// Report is the result of a paired probe, from one side.
type Report struct {
	Schema         string             `json:"schema"`              // ProbeSchema
	NatlabVersion  string             `json:"natlab_version"`      // the build that wrote it
	Side           string             `json:"side"`                // "A" or "B"
	Server         string             `json:"server"`              // natlab serve's address
	Self           *natclass.Profile  `json:"self"`                // this host's NAT profile
	PortMapping    *portmap.Report    `json:"port_mapping"`        // what this host's gateway maps (null when not probed)
	Peer           natclass.Summary   `json:"peer"`                // the peer's, as it sent it (routers_between from its trace)
	Path           *natclass.PeerPath `json:"path,omitempty"`      // this side's trace toward the peer's public address
	Techniques     []TechniqueResult  `json:"techniques"`          // in order of preference
	Relay          *RelayReport       `json:"relay,omitempty"`     // TURN relay figures, and the cost against the direct path
	Keepalive      *Keepalive         `json:"keepalive,omitempty"` // with --lifetime: what keeping the direct path open costs this host
	IPv6           *FamilyResult      `json:"ipv6,omitempty"`      // the IPv6 stage, when both peers have IPv6
	Verdict        Verdict            `json:"verdict"`             // what to use
	DurationMillis float64            `json:"duration_ms"`         // wall time
}

// peerInfo is what a peer sends through the rendezvous when pairing.
type peerInfo struct {
	Summary natclass.Summary `json:"summary"`
	// Summary6 is this peer's IPv6 summary: it was profiled over IPv6
	// and runs the IPv6 technique plan, which both sides run exactly
	// when both sent one.
	Summary6 *natclass.Summary `json:"summary6,omitempty"`
	// V6 is what peers before the IPv6 plan sent instead (they then ran
	// a UDP-only IPv6 stage of their own). It is no longer sent, so
	// such a peer skips its stage and a mixed pair never waits at a
	// barrier the other side does not run.
	V6 bool `json:"v6,omitempty"`
}

// stepData is what a peer sends at each barrier: its fresh candidates for
// the technique about to start, and the outcome of the previous one.
type stepData struct {
	Candidates []holepunch.Candidate `json:"c,omitempty"`
	// Predict is the step of this side's sequential allocator: the peer
	// expands srflx+step·k itself, which keeps the datagram small.
	Predict  int              `json:"p,omitempty"`
	Previous natclass.Outcome `json:"prev,omitempty"`
	// Err says why this side could not prepare the technique.
	Err string `json:"err,omitempty"`
	// RTT is this side's round trip to the server, in ms: with the
	// peer's, it estimates the one-way time between the two.
	RTT float64 `json:"rtt,omitempty"`
	// Between is this side's count of routers toward the peer (path
	// step only).
	Between *int `json:"between,omitempty"`
}

// ErrNoPath means this host cannot reach the server at all, so no peer can
// be met: neither UDP nor TCP gets through.
var ErrNoPath = errors.New("no path to the server")

// ErrNoPeer means the pairing timed out: no peer joined the code.
var ErrNoPeer = errors.New("no peer joined")

// Run profiles this host, pairs with the peer through the server, tries
// every direct technique in order with the peer, and returns the report.
func Run(ctx context.Context, o Options) (*Report, error) {
	start := time.Now()
	if o.Net == nil {
		return nil, errors.New("probe: Options.Net is nil")
	}
	if o.PairTimeout <= 0 {
		o.PairTimeout = DefaultPairTimeout
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &agent{o: o, log: log, start: start}
	return a.run(ctx)
}

type agent struct {
	o     Options
	log   *slog.Logger
	start time.Time
	side  holepunch.Side
	sess  holepunch.Session
	srv   netip.AddrPort
	tcp   bool
	rz    *rendezvous.Client
	self  *natclass.Profile
	pm    *portmap.Report
	peer  natclass.Summary
	// srv6 and self6: the server's IPv6 address and this host's IPv6
	// profile (Options.Server6); peer6: the peer's IPv6 summary, when it
	// runs the IPv6 plan.
	srv6  netip.AddrPort
	self6 *natclass.Profile
	peer6 *natclass.Summary
	// nat64 is the NAT64 prefix this IPv6-only host reaches IPv4 through
	// (profile4); srv is then the server's synthesised address.
	nat64 netip.Prefix
	// held is the last confirmed path, kept answering the peer's pings
	// until the next barrier shows the peer has finished too.
	held *holepunch.Path
	// heldConn is the same for a TCP connection.
	heldConn net.Conn
	// direct is the first confirmed UDP path, kept open past its barrier
	// so the relay stage can measure it against the relay.
	direct     *holepunch.Path
	directTech natclass.Technique
	// direct6 is the same over IPv6, for the IPv6 relay's comparison.
	direct6     *holepunch.Path
	direct6Tech natclass.Technique
	// step numbers the rendezvous barriers.
	step int
	// path is this side's trace toward the peer's public address; path6
	// toward its public IPv6 address, when both run the IPv6 plan.
	path, path6 *natclass.PeerPath
	// cleanups undo what a technique set up outside the socket (a port
	// mapping), once its path is released.
	cleanups []func()
}

// release closes the held path once the peer is past the barrier, then
// removes any port mapping made for it.
func (a *agent) release() {
	if a.held != nil {
		_ = a.held.Close()
		a.held = nil
	}
	if a.heldConn != nil {
		_ = a.heldConn.Close()
		a.heldConn = nil
	}
	for _, c := range a.cleanups {
		c()
	}
	a.cleanups = nil
}

func (a *agent) emit(e Event) {
	if a.o.Events == nil {
		return
	}
	e.Time = time.Now()
	e.Elapsed = millis.Since(a.start)
	if a.side != 0 {
		e.Side = a.side.String()
	}
	a.o.Events(e)
}

func (a *agent) run(ctx context.Context) (*Report, error) {
	ua, err := a.o.Net.ResolveUDPAddr("udp4", a.o.Server)
	if err != nil {
		return nil, fmt.Errorf("server %s: %w", a.o.Server, err)
	}
	ap := ua.AddrPort()
	a.srv = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	a.tcp = supportsTCP(a.o.Net)

	a.emit(Event{Stage: StageProfile, Message: "profiling this host's NAT against " + a.o.Server})
	// The port-mapping probe talks to the gateway, the profile to the
	// server: run them together, so the probe costs no extra time.
	var pmDone chan struct{}
	if !a.o.NoPortMap {
		pmDone = make(chan struct{})
		go func() {
			defer close(pmDone)
			r := portmap.Check(ctx, portmap.Options{Net: a.o.Net, Gateway: a.o.Gateway, Logger: a.log}, a.srv)
			a.pm = &r
		}()
	}
	wait6, err := a.startProfile6(ctx)
	if err != nil {
		return nil, err
	}
	a.self, err = a.profile4(ctx)
	wait6()
	if pmDone != nil {
		<-pmDone
	}
	if errors.Is(err, natclass.ErrServerUnreachable) {
		return nil, fmt.Errorf("%w: %w", ErrNoPath, err)
	}
	if err != nil {
		return nil, fmt.Errorf("profile: %w", err)
	}
	a.emit(Event{Stage: StageProfile, Message: "this host: " + string(a.self.NATType), Data: a.self})
	if a.pm != nil {
		a.emit(Event{Stage: StageProfile, Message: "port mapping: " + a.pm.Summary(), Data: a.pm})
	}
	if a.self.NATType == natclass.UDPBlocked && !a.tcp {
		return nil, fmt.Errorf("%w: no UDP answer from %s, and this network stack has no TCP to fall back on", ErrNoPath, a.o.Server)
	}

	if err := a.pair(ctx); err != nil {
		return nil, err
	}
	defer a.rz.Close()
	if err := a.sharePath(ctx); err != nil {
		return nil, err
	}

	rep := &Report{Schema: ProbeSchema, NatlabVersion: buildinfo.Version(), Side: a.side.String(), Server: a.o.Server, Self: a.self, PortMapping: a.pm, Peer: a.peer, Path: a.path}
	defer a.release()
	defer a.closeDirect()
	f4 := a.family4()
	if rep.Techniques, err = a.runPlan(ctx, f4, a.predictions(f4)); err != nil {
		return nil, err
	}
	if a.runs6() {
		if rep.IPv6, err = a.ipv6Plan(ctx); err != nil {
			return nil, err
		}
	}
	rep.Verdict = verdict(rep.Techniques)
	if a.o.Relay != nil {
		if err := a.relayReports(ctx, rep); err != nil {
			return nil, err
		}
	}
	if a.o.Lifetime {
		if err := a.lifetimeStage(ctx, rep); err != nil {
			return nil, err
		}
	}
	v := preferFamily(rep.Verdict, rep.IPv6)
	if rep.IPv6 != nil {
		v = relayFamilies(v, rep.Relay, rep.IPv6.Relay)
	}
	rep.Verdict = nat64Verdict(v, a.nat64)
	a.emit(Event{Stage: StageVerdict, Message: rep.Verdict.Summary, Data: rep.Verdict})
	rep.DurationMillis = millis.Since(a.start)
	return rep, nil
}

// sharePath traces the path toward the peer's public address and swaps
// the count of routers between with the peer at a barrier, so both sides
// predict from both measurements.
func (a *agent) sharePath(ctx context.Context) error {
	pp, theirs, err := a.swapPath(ctx, a.peer.Mapped, openingTTL(a.self), "")
	if err != nil {
		return err
	}
	a.path, a.peer.RoutersBetween = pp, theirs
	return nil
}

// swapPath traces toward the peer's public address (mapped, ip:port)
// with TTLs (IPv6: hop limits) from 1 and swaps the count of routers
// between at a barrier: this side's path and the peer's count. fam is
// the event's family ("" for IPv4).
func (a *agent) swapPath(ctx context.Context, mapped string, ttl int, fam string) (*natclass.PeerPath, *int, error) {
	pp := natclass.PeerPath{Reason: "the peer's public address is unknown"}
	if ap, err := netip.ParseAddrPort(mapped); err == nil {
		pp = natclass.TracePeer(ctx, a.o.Net, a.via(ap).Addr(), ttl, a.rz.RTT())
	}
	over := ""
	if fam == familyIPv6 {
		over = " over IPv6"
	}
	msg := "path to the peer" + over + ": " + pp.Reason
	if pp.RoutersBetween != nil {
		msg = fmt.Sprintf("path to the peer%s: %d routers between our NATs and the peer's", over, *pp.RoutersBetween)
	}
	a.emit(Event{Stage: StagePath, Family: fam, Message: msg, Data: pp})
	raw, err := a.barrier(ctx, stepData{Between: pp.RoutersBetween})
	if err != nil {
		return nil, nil, fmt.Errorf("path%s step with the peer: %w", over, err)
	}
	var theirs stepData
	if err := json.Unmarshal(raw, &theirs); err != nil {
		return nil, nil, fmt.Errorf("path%s step: malformed peer data: %w", over, err)
	}
	return &pp, theirs.Between, nil
}

// summary is what the peer learns of this host.
func (a *agent) summary() natclass.Summary {
	s := HostSummary(a.self, a.pm, a.tcp)
	if a.path != nil {
		s.RoutersBetween = a.path.RoutersBetween
	}
	return s
}

// HostSummary is the predictor's input for a host: its profile, whether
// its gateway maps ports (pm, nil when not probed) and whether it can try
// TCP. The probe sends exactly this to its peer; natlab fleet builds the
// same from check and probe documents.
func HostSummary(p *natclass.Profile, pm *portmap.Report, tcp bool) natclass.Summary {
	s := p.Summary(tcp)
	s.PortMapping = gatewayMaps(pm)
	return s
}

// gatewayMaps: a verified test mapping when the check could run, any
// answering protocol otherwise.
func gatewayMaps(pm *portmap.Report) bool {
	if pm == nil || !pm.Any() {
		return false
	}
	if in := pm.Inbound; in != nil && in.Admitted != natclass.NotChecked {
		return in.Admitted == natclass.Yes
	}
	return true
}

// supportsTCP reports whether n can open TCP sockets (the in-process lab
// cannot).
func supportsTCP(n transport.Net) bool {
	l, err := n.ListenTCP("tcp4", &net.TCPAddr{})
	if err != nil {
		return false
	}
	_ = l.Close()
	return true
}

func (a *agent) pair(ctx context.Context) error {
	var rz *rendezvous.Client
	var err error
	if a.self.NATType == natclass.UDPBlocked {
		// UDP cannot reach the server: pair over TCP to the same port.
		if rz, err = rendezvous.DialTCP(ctx, a.o.Net, a.rzServer()); err != nil {
			return fmt.Errorf("%w: no UDP answer from %s, and over TCP: %w", ErrNoPath, a.o.Server, errors.Unwrap(err))
		}
	} else {
		rz, err = rendezvous.Dial(a.o.Net, a.rzServer())
	}
	if err != nil {
		return err
	}
	a.rz = rz
	mode, code := a.o.Mode, a.o.Code
	if mode == "" {
		mode = rendezvous.Create
	}
	if code == "" {
		if mode != rendezvous.Create {
			rz.Close()
			return errors.New("a pairing code is needed to join")
		}
		if code, err = rendezvous.NewCode(); err != nil {
			rz.Close()
			return err
		}
	}
	info, err := json.Marshal(a.info())
	if err != nil {
		rz.Close()
		return fmt.Errorf("peer info: %w", err)
	}
	a.emit(Event{Stage: StagePair, Message: "waiting for the peer"})
	pctx, cancel := context.WithTimeout(ctx, a.o.PairTimeout)
	defer cancel()
	peer, err := rz.Pair(pctx, mode, code, info, func() {
		a.emit(Event{Stage: StagePair, Message: "pairing code: " + code, Data: PairingCode{Code: code, Server: a.o.Server, Mode: mode}})
		if a.o.OnCode != nil {
			a.o.OnCode(code)
		}
	})
	if err != nil {
		rz.Close()
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			return fmt.Errorf("%w within %v", ErrNoPeer, a.o.PairTimeout.Round(time.Millisecond))
		}
		return fmt.Errorf("pairing: %w", err)
	}
	var pi peerInfo
	if err := json.Unmarshal(peer.Info, &pi); err != nil {
		rz.Close()
		return fmt.Errorf("peer info: %w", err)
	}
	a.peer, a.peer6 = pi.Summary, pi.Summary6
	a.side, a.sess = sessionFor(rz.Code(), rz.Token(), peer.Token, peer.Slot)
	a.emit(Event{Stage: StagePair, Message: "paired; peer is " + string(a.peer.NATType), Data: a.peer})
	return nil
}

// info is what this side tells the peer at pairing: its summary, and
// its IPv6 summary when it was profiled over IPv6.
func (a *agent) info() peerInfo {
	pi := peerInfo{Summary: a.summary()}
	if a.self6 != nil {
		s6 := a.summary6()
		pi.Summary6 = &s6
	}
	return pi
}

// sessionFor derives the shared session from what both peers know: the
// code and both tokens. The host that entered the pairing first is side
// A, the one that joined B, as the server tells each (slot); a server
// that does not say leaves it to the lower token. Both agree without a
// further message. Anyone without the code cannot forge probes.
func sessionFor(code, mine, theirs string, slot int) (holepunch.Side, holepunch.Session) {
	side := holepunch.SideA
	ta, tb := mine, theirs
	if slot == 2 || (slot == 0 && mine > theirs) {
		side, ta, tb = holepunch.SideB, theirs, mine
	}
	key := sha256.Sum256([]byte("natlab session key\x00" + code + "\x00" + ta + "\x00" + tb))
	id := sha256.Sum256(append([]byte("natlab session id\x00"), key[:]...))
	s := holepunch.Session{Key: key, Side: side}
	copy(s.ID[:], id[:])
	return side, s
}

// runPlan tries every technique of preds in f with the peer, in order,
// then a last barrier where both sides learn the other's last outcome,
// so they agree on every technique.
func (a *agent) runPlan(ctx context.Context, f *family, preds []natclass.Prediction) ([]TechniqueResult, error) {
	var out []TechniqueResult
	var prev natclass.Outcome
	for i, p := range preds {
		out = append(out, a.technique(ctx, f, i+1, p, &prev))
		if ctx.Err() != nil {
			return nil, fmt.Errorf("probe: %w", ctx.Err())
		}
	}
	if err := a.agree(ctx, f, out, prev); err != nil {
		return nil, err
	}
	return out, nil
}

// technique runs step k of f's plan with the peer.
func (a *agent) technique(ctx context.Context, f *family, k int, p natclass.Prediction, prev *natclass.Outcome) TechniqueResult {
	tr := TechniqueResult{Technique: p.Technique, Predicted: p.Outcome, Reason: p.Reason, Measured: natclass.Skipped}
	label, fam := string(p.Technique), ""
	if f.v6() {
		label, fam = string(p.Technique)+" over IPv6", familyIPv6
	}
	a.emit(Event{Stage: StageTechnique, Step: k, Family: fam, Data: p, Message: fmt.Sprintf("%s: predicted %s (%s)", label, p.Outcome, p.Reason)})
	defer func() {
		*prev = tr.Measured
		a.emit(Event{Stage: StageTechnique, Step: k, Family: fam, Outcome: tr.Measured, Data: tr,
			Message: fmt.Sprintf("%s: %s", label, tr.Measured)})
	}()
	tries := 1
	if p.Technique == natclass.DirectTCP && (p.Outcome == natclass.Success || p.Outcome == natclass.UnknownOutcome) {
		// Two Linux NATs race: a SYN that reaches the peer's router before
		// the peer's own SYN left leaves an unreplied conntrack entry that
		// moves the peer's port (the conntrack trap, which a low TTL
		// cannot avoid for TCP: the ICMP error aborts the connect). Fresh
		// ports on both sides get a second, independent chance.
		tries = 2
	}
	for try := range tries {
		first := try == 0
		if !first && tr.Measured == natclass.Success {
			// Both sides run the same barriers: say there is nothing to
			// retry.
			if _, err := a.barrier(ctx, stepData{Err: "no retry needed"}); err != nil {
				tr.Measured, tr.Error = natclass.Fail, "peer lost: "+err.Error()
			}
			break
		}
		attempts := tr.Attempts
		tr = a.attempt(ctx, f, p, tr, first, prev)
		tr.Attempts += attempts
	}
	return tr
}

// attempt prepares this side, exchanges candidates with the peer at a
// barrier, and punches.
func (a *agent) attempt(ctx context.Context, f *family, p natclass.Prediction, tr TechniqueResult, first bool, prev *natclass.Outcome) TechniqueResult {
	var sock *socket
	my := stepData{RTT: millis.Of(a.rz.RTT())}
	if first {
		my.Previous = *prev
	}
	if p.Outcome != natclass.Skipped {
		s, err := a.prepare(ctx, f, p.Technique)
		if err != nil {
			tr.Measured, tr.Error = natclass.Fail, err.Error()
			my.Err = err.Error()
		} else {
			sock = s
			my.Candidates, my.Predict = s.candidates, s.predict
		}
	}
	raw, err := a.barrier(ctx, my)
	if err != nil {
		sock.close()
		tr.Measured, tr.Error = natclass.Fail, "peer lost: "+err.Error()
		return tr
	}
	var theirs stepData
	if err := json.Unmarshal(raw, &theirs); err != nil {
		sock.close()
		tr.Measured, tr.Error = natclass.Fail, "peer sent malformed step data"
		return tr
	}
	if first && a.step > f.start+1 {
		f.peerOutcomes = append(f.peerOutcomes, theirs.Previous)
	}
	if sock == nil {
		return tr
	}
	if len(theirs.Candidates) == 0 {
		sock.close()
		if first || tr.Measured != natclass.Success {
			tr.Measured, tr.Error = natclass.Fail, "the peer could not try: "+theirs.Err
		}
		return tr
	}
	path, res := a.punch(ctx, f, p, sock, theirs)
	if kept, tech := a.keptDirect(f); path != nil && a.o.Relay != nil && *kept == nil {
		// Keep the family's preferred direct path for the relay stage's
		// comparison; it keeps answering the peer meanwhile.
		*kept, *tech = path, p.Technique
		path = nil
	}
	a.held = path
	if sock.cleanup != nil {
		// The socket now belongs to the path (or is closed): undo the
		// mapping when the path is released.
		a.cleanups = append(a.cleanups, sock.cleanup)
	}
	tr.Attempts = res.Attempts
	if res.Success {
		tr.Measured, tr.Error = natclass.Success, ""
		tr.TimeToFirstPacketMillis = millis.Of(res.TimeToFirstPacket)
		tr.RTTMillis = millis.Of(res.RTT)
		tr.Remote = res.Remote.String()
	} else {
		tr.Measured = natclass.Fail
		if res.Err != nil {
			tr.Error = res.Err.Error()
		}
	}
	return tr
}

// barrier is the next rendezvous step: both peers run the same sequence of
// barriers, numbered here, so the numbers always agree.
func (a *agent) barrier(ctx context.Context, data any) (json.RawMessage, error) {
	a.step++
	sctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	raw, err := a.rz.Step(sctx, a.step, data)
	a.release()
	return raw, err
}

// agree exchanges the last outcome of f's plan and merges the peer's
// view into ts: a path counts only if both sides confirmed it.
func (a *agent) agree(ctx context.Context, f *family, ts []TechniqueResult, last natclass.Outcome) error {
	raw, err := a.barrier(ctx, stepData{Previous: last})
	if err != nil {
		return fmt.Errorf("final %s exchange with the peer: %w", f.name, err)
	}
	var theirs stepData
	if err := json.Unmarshal(raw, &theirs); err != nil {
		return fmt.Errorf("final %s exchange: malformed peer data: %w", f.name, err)
	}
	f.peerOutcomes = append(f.peerOutcomes, theirs.Previous)
	for i := range ts {
		t := &ts[i]
		if i < len(f.peerOutcomes) && t.Measured == natclass.Success && f.peerOutcomes[i] != natclass.Success {
			// Both directions are confirmed by the punch itself, so this
			// means the peer timed out just as we succeeded: not usable.
			t.Measured, t.Error = natclass.Fail, "the peer did not confirm the path"
		}
	}
	return nil
}

// socket is what a side prepared for one technique.
type socket struct {
	conn       net.PacketConn
	ln         net.Listener // TCP simultaneous open's listener
	srflx      netip.AddrPort
	candidates []holepunch.Candidate
	predict    int
	role       holepunch.BirthdayRole
	// cleanup undoes what was set up outside the socket (a port mapping);
	// it runs once the technique's path is released.
	cleanup   func()
	closeOnce sync.Once
}

func (s *socket) close() {
	if s == nil {
		return
	}
	s.closeOnce.Do(func() {
		if s.conn != nil {
			_ = s.conn.Close()
		}
		if s.ln != nil {
			_ = s.ln.Close()
		}
		if s.cleanup != nil {
			s.cleanup()
		}
	})
}

// closeDirect drops the kept direct paths the relay stage did not take.
func (a *agent) closeDirect() {
	for _, d := range []**holepunch.Path{&a.direct, &a.direct6} {
		if *d != nil {
			_ = (*d).Close()
			*d = nil
		}
	}
}

// keptDirect is where f's kept direct path and its technique go.
func (a *agent) keptDirect(f *family) (**holepunch.Path, *natclass.Technique) {
	if f.v6() {
		return &a.direct6, &a.direct6Tech
	}
	return &a.direct, &a.directTech
}
