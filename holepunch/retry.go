package holepunch

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/pion/transport/v4"

	"github.com/natlab/natlab/internal/netaddr"
)

// DefaultAttempts is how many sockets PunchUDPRetry tries: the first, and
// one fresh socket, which gets a fresh mapping if conntrack moved the
// first one (DESIGN.md's trap); a third would rarely meet where two failed.
const DefaultAttempts = 2

// Exchange sends our candidates for attempt n (from 1) to the peer, through
// the rendezvous, and returns the peer's candidates for the same attempt.
// It is also the barrier that starts both sides' attempts together.
type Exchange func(ctx context.Context, attempt int, local []Candidate) ([]Candidate, error)

// RetryConfig configures PunchUDPRetry.
type RetryConfig struct {
	// Config is the first attempt; Net must be set for the fresh sockets.
	// Its Timeout (or DefaultPunchTimeout) bounds all attempts together.
	Config
	// STUN is the server that tells a fresh socket its srflx address.
	STUN netip.AddrPort
	// Attempts is the number of attempts (DefaultAttempts when 0).
	Attempts int
	// Exchange trades candidates for every attempt after the first.
	Exchange Exchange
}

// PunchUDPRetry runs PunchUDP and, when it fails, retries with a fresh
// socket whose candidates are traded through rc.Exchange. Both sides must
// call it with the same Attempts. The returned Result is the last
// attempt's, with Attempts summed over all of them.
func PunchUDPRetry(ctx context.Context, rc RetryConfig) (*Path, Result, error) {
	n := max(cmp.Or(rc.Attempts, DefaultAttempts), 1)
	total := cmp.Or(rc.Timeout, DefaultPunchTimeout)
	ctx, cancel := context.WithTimeout(ctx, total)
	defer cancel()
	start := time.Now()
	per := total / time.Duration(n)
	cfg := rc.Config
	probes := 0
	var res Result
	var err error
	for i := 1; i <= n; i++ {
		if i > 1 {
			if rc.Exchange == nil || rc.Net == nil {
				break
			}
			if cfg, err = rc.fresh(ctx, i); err != nil {
				res.Err = err
				break
			}
		}
		cfg.Timeout = per
		cfg.Schedule = Schedule{}
		if rc.Schedule != (Schedule{}) {
			cfg.Schedule = rc.Schedule
			cfg.Schedule.Total = per
		}
		var p *Path
		p, res, err = PunchUDP(ctx, cfg)
		probes += res.Attempts
		res.Attempts = probes
		res.Duration = time.Since(start)
		if err == nil {
			p.Result = res
			return p, res, nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	if res.Err == nil {
		res.Err = fmt.Errorf("%w after %d attempts", ErrNoPath, n)
	}
	return nil, res, res.Err
}

// fresh opens a new socket, learns its candidates and trades them.
func (rc RetryConfig) fresh(ctx context.Context, attempt int) (Config, error) {
	cfg := rc.Config
	c, err := rc.Net.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		return cfg, fmt.Errorf("attempt %d: open socket: %w", attempt, err)
	}
	local := hostCandidates(rc, c)
	if rc.STUN.IsValid() {
		if srflx, err := Reflexive(ctx, c, rc.STUN); err == nil {
			local = append(local, Candidate{Kind: Srflx, Addr: srflx})
		}
	}
	remote, err := rc.Exchange(ctx, attempt, local)
	if err != nil {
		_ = c.Close()
		return cfg, fmt.Errorf("attempt %d: exchange candidates: %w", attempt, err)
	}
	if len(remote) == 0 {
		_ = c.Close()
		return cfg, fmt.Errorf("attempt %d: %w", attempt, errors.New("peer sent no candidates"))
	}
	cfg.Conn, cfg.Remote = c, remote
	return cfg, nil
}

// hostCandidates are the socket's port on every non-loopback IPv4 address.
func hostCandidates(rc RetryConfig, c net.PacketConn) []Candidate {
	return HostCandidates(rc.Net, netaddr.AddrPort(c.LocalAddr()).Port())
}

// HostCandidates are port on every non-loopback IPv4 address of n's
// interfaces: where a peer on the same LAN reaches this host.
func HostCandidates(n transport.Net, port uint16) []Candidate {
	var out []Candidate
	for _, p := range netaddr.Prefixes(n) {
		if ip := p.Addr(); !ip.IsLoopback() && !ip.IsUnspecified() {
			out = append(out, Candidate{Kind: Host, Addr: netip.AddrPortFrom(ip, port)})
		}
	}
	return out
}
