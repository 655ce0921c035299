package probe

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/natlab/natlab/holepunch"
	"github.com/natlab/natlab/internal/netaddr"
	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/portmap"
)

// prepare opens this side's socket for a technique in family f and
// learns what the peer needs to reach it; the result travels in the
// step's data.
func (a *agent) prepare(ctx context.Context, f *family, t natclass.Technique) (*socket, error) {
	switch t {
	case natclass.SameLAN, natclass.DirectUDP, natclass.PredictUDP, natclass.Birthday:
	case natclass.MappedUDP:
		if f.mapped() {
			return a.prepareMapped(ctx)
		}
	default:
		return a.prepareTCP(ctx, f)
	}
	if f.self.NATType == natclass.UDPBlocked {
		return nil, fmt.Errorf("this host's UDP is blocked")
	}
	conn, err := a.o.Net.ListenPacket(f.udp, f.wildcard)
	if err != nil {
		return nil, fmt.Errorf("open UDP socket: %w", err)
	}
	s := &socket{conn: conn}
	srflx, err := holepunch.Reflexive(ctx, conn, f.srv)
	if err != nil {
		s.close()
		return nil, fmt.Errorf("learn server-reflexive address: %w", err)
	}
	s.srflx = srflx
	switch t {
	case natclass.SameLAN:
		s.candidates = f.hostCandidates(a, netaddr.AddrPort(conn.LocalAddr()).Port())
	case natclass.PredictUDP:
		s.candidates = []holepunch.Candidate{{Kind: holepunch.Srflx, Addr: srflx}}
		if pa := f.self.PortAllocation; pa != nil && pa.Pattern == natclass.Sequential && f.self.Mapping != natclass.EndpointIndependent {
			s.predict = max(pa.Step, 1)
		}
	case natclass.Birthday:
		s.candidates = []holepunch.Candidate{{Kind: holepunch.Srflx, Addr: srflx}}
		s.role = holepunch.Scan
		if pa := f.self.PortAllocation; pa != nil && pa.Pattern == natclass.Random && f.self.Mapping != natclass.EndpointIndependent {
			// The spreading side opens fresh sockets; this one only
			// told the peer which public address to scan.
			s.role = holepunch.Spread
			s.close()
		}
	default:
		s.candidates = []holepunch.Candidate{{Kind: holepunch.Srflx, Addr: srflx}}
	}
	return s, nil
}

// punch runs the technique with the peer's step data. The returned path,
// if any, is held until the peer has passed the next barrier.
func (a *agent) punch(ctx context.Context, f *family, p natclass.Prediction, s *socket, theirs stepData) (*holepunch.Path, holepunch.Result) {
	t := p.Technique
	var (
		path *holepunch.Path
		res  holepunch.Result
	)
	theirs.Candidates = f.reach(theirs.Candidates) // through a NAT64: synthesised
	switch t {
	case natclass.SameLAN, natclass.DirectUDP, natclass.PredictUDP, natclass.MappedUDP:
		remote := theirs.Candidates
		tech := natclass.DirectUDP
		ttl := f.openingTTL()
		if f.adjacent() {
			ttl = 0 // it would reach the peer's router all the same
		}
		switch t {
		case natclass.SameLAN:
			tech, ttl = natclass.SameLAN, 0 // on a LAN there is no NAT to open
		case natclass.PredictUDP:
			tech = natclass.PredictUDP
			if theirs.Predict > 0 && len(remote) > 0 {
				remote = append(remote, holepunch.PredictPorts(remote[0].Addr, theirs.Predict, holepunch.DefaultPredicted)...)
			}
		}
		sch := holepunch.DefaultSchedule()
		sch.Opening = openingWindow(a.rz.RTT(), theirs.RTT)
		sch.Total = punchTimeout
		path, res, _ = holepunch.PunchUDP(ctx, holepunch.Config{
			Conn: s.conn, Session: a.sess, Remote: remote, Timeout: punchTimeout, Schedule: sch,
			OpeningTTL: ttl, Hold: a.hold(p, theirs), Technique: tech, Logger: a.log,
		})
	case natclass.Birthday:
		cfg := holepunch.BirthdayConfig{Net: a.o.Net, Session: a.sess, Role: s.role, Peer: theirs.Candidates[0].Addr, OpeningTTL: f.openingTTL(),
			Hold: a.hold(p, theirs), Logger: a.log}
		if f.adjacent() {
			cfg.OpeningTTL = -1 // full TTL: no router between to expire at
		}
		if p.Outcome != natclass.Success {
			// Confirming a predicted failure needs no full birthday run.
			cfg.Timeout = punchTimeout
		}
		if s.role == holepunch.Scan {
			cfg.Conn = s.conn
		}
		path, res, _ = holepunch.PunchBirthday(ctx, cfg)
	default:
		path, res = a.punchTCP(ctx, p, s, theirs)
	}
	return path, res
}

// prepareMapped maps a port on this host's gateway and offers the mapping's
// external address; the mapping is removed when the technique's path is
// released.
func (a *agent) prepareMapped(ctx context.Context) (*socket, error) {
	conn, m, cleanup, err := portmap.OpenMapped(ctx, a.o.Net, a.gateway(), portmap.DefaultLifetime)
	if err != nil {
		return nil, fmt.Errorf("map a port on the gateway: %w", err)
	}
	return &socket{conn: conn, srflx: m.External, cleanup: cleanup, candidates: []holepunch.Candidate{{Kind: holepunch.Srflx, Addr: m.External}}}, nil
}

// gateway is the router that answered the port-mapping probe, else the
// configured one.
func (a *agent) gateway() netip.Addr {
	if a.pm != nil && a.pm.Gateway.IsValid() {
		return a.pm.Gateway
	}
	return a.o.Gateway
}

// Opening window bounds, each with why.
const (
	// startSkew is how far apart the two peers may start a technique
	// although the server aligns their "go": scheduling on a loaded host
	// and the error of the RTT estimates. A peer packet that reaches our
	// router before our own opening packet left would hit the conntrack
	// trap (README), so the window must outlast the skew minus the
	// peer's packet's travel time.
	startSkew = 75 * time.Millisecond
	// minOpening keeps a few opening packets even on long paths, where a
	// lost one would otherwise leave no mapping before the peer's arrive.
	minOpening = 20 * time.Millisecond
)

// openingWindow is how long the punch only opens our own mappings (low-TTL
// packets) before probing the peer: long enough to cover the start skew,
// less the estimated one-way time between the peers (a quarter of the two
// server round trips), so long paths do not pay for it twice.
func openingWindow(mine time.Duration, theirsMillis float64) time.Duration {
	owd := (mine + time.Duration(theirsMillis*float64(time.Millisecond))) / 4
	return min(max(startSkew-owd, minOpening), holepunch.DefaultOpening)
}

// hold is how long this side waits before its first packet to the peer:
// the opening window when the prediction has the peer open first.
func (a *agent) hold(p natclass.Prediction, theirs stepData) time.Duration {
	if p.Opener == "" || p.Opener == a.side.String() {
		return 0
	}
	return openingWindow(a.rz.RTT(), theirs.RTT)
}
