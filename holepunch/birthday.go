package holepunch

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"time"

	"github.com/pion/transport/v4"

	"github.com/natlab/natlab/natclass"
)

const (
	// DefaultBirthdayTimeout bounds birthday probing: 256 mappings against
	// 400 probes a second find each other with 95% odds in about 2 s and
	// 99.99% in 6 s, so 10 s only fails when the pair cannot meet.
	DefaultBirthdayTimeout = 10 * time.Second
	// DefaultBirthdaySockets is how many mappings the random side opens:
	// 256 is the count Tailscale's analysis uses, few enough for one
	// process and any NAT's table.
	DefaultBirthdaySockets = 256
	// MaxBirthdaySockets bounds the sockets one punch may open.
	MaxBirthdaySockets = 1024
	// DefaultBirthdayRate is the scanning side's probe rate: 400 small
	// packets a second (about 25 kB/s) is invisible next to any real
	// traffic and fast enough for the timeout above.
	DefaultBirthdayRate = 400
	// MaxBirthdayRate bounds the probe rate, so a misconfiguration cannot
	// turn a probe into a flood.
	MaxBirthdayRate = 2000
	// birthdayTick is how often the scanner sends its next batch: fine
	// enough that a batch is a handful of packets.
	birthdayTick = 10 * time.Millisecond
	// spreadRefresh is how often the spreading side re-sends on every
	// socket: its first packets open the mappings, later ones only keep
	// them alive and catch a scanner that started late.
	spreadRefresh = time.Second
	// minScanPort is the bottom of the range random allocators use
	// (Linux masquerade and the lab both allocate from 1024 up).
	minScanPort = 1024
)

// BirthdayRole is one side of birthday probing.
type BirthdayRole string

// The two roles.
const (
	// Spread is the side behind a random (symmetric) allocator: it opens
	// many sockets, each sending to the peer's one address, so its NAT
	// creates many mappings toward it.
	Spread BirthdayRole = "spread"
	// Scan is the side with an endpoint-independent mapping: from one
	// socket it probes random ports of the peer's public address until one
	// of them is a mapping toward it.
	Scan BirthdayRole = "scan"
)

// BirthdayConfig configures PunchBirthday.
type BirthdayConfig struct {
	Net     transport.Net
	Session Session
	Role    BirthdayRole
	// Peer is, for Spread, the scanning peer's srflx address; for Scan,
	// the spreading peer's srflx address (its IP is scanned, and the
	// address itself is probed too).
	Peer netip.AddrPort
	// Conn is the Scan side's socket (opened from Net when nil); PunchBirthday
	// owns it. Spread always opens fresh sockets.
	Conn net.PacketConn
	// Sockets is the Spread side's socket count (DefaultBirthdaySockets
	// when 0, at most MaxBirthdaySockets).
	Sockets int
	// Rate is the Scan side's probes per second (DefaultBirthdayRate when
	// 0, at most MaxBirthdayRate).
	Rate int
	// OpeningTTL is the TTL of the Spread side's probes (DefaultOpeningTTL
	// when 0, full TTL when negative): they only need to open mappings,
	// and must not reach the scanner's router, where each would leave a
	// conntrack entry that moves the scanner's source port exactly when
	// its probe hits that mapping (the conntrack trap).
	OpeningTTL int
	// Hold, when > 0, delays this side's probes by this long, so the
	// peer opens first (see Config.Hold).
	Hold time.Duration
	// Timeout bounds the punch (DefaultBirthdayTimeout when 0).
	Timeout time.Duration
	Logger  *slog.Logger
}

// PunchBirthday runs one side of birthday probing and returns the path as
// soon as one pair of mappings has met. Result.Attempts counts probes.
func PunchBirthday(ctx context.Context, cfg BirthdayConfig) (*Path, Result, error) {
	res := Result{Technique: natclass.Birthday}
	fail := func(err error) (*Path, Result, error) {
		res.Err = err
		return nil, res, err
	}
	if err := cfg.Session.valid(); err != nil {
		closeConn(cfg.Conn)
		return fail(err)
	}
	if !cfg.Peer.IsValid() {
		closeConn(cfg.Conn)
		return fail(errors.New("birthday: no peer address"))
	}
	if cfg.Net == nil && (cfg.Role == Spread || cfg.Conn == nil) {
		return fail(errors.New("birthday: no Net to open sockets"))
	}
	timeout := cmp.Or(cfg.Timeout, DefaultBirthdayTimeout)
	var conns []net.PacketConn
	var pl plan
	switch cfg.Role {
	case Spread:
		n := min(cmp.Or(cfg.Sockets, DefaultBirthdaySockets), MaxBirthdaySockets)
		for range n {
			c, err := cfg.Net.ListenPacket(udpSocket(cfg.Peer.Addr()))
			if err != nil {
				for _, c := range conns {
					_ = c.Close()
				}
				return fail(fmt.Errorf("birthday: open socket %d of %d: %w", len(conns)+1, n, err))
			}
			conns = append(conns, c)
		}
		targets := make([]pair, n)
		for i := range targets {
			targets[i] = pair{sock: i, remote: cfg.Peer, kind: Srflx}
		}
		pl = func(i int) (step, bool) {
			return step{at: time.Duration(i) * spreadRefresh, targets: targets, lowTTL: true}, true
		}
	case Scan:
		c := cfg.Conn
		if c == nil {
			var err error
			if c, err = cfg.Net.ListenPacket(udpSocket(cfg.Peer.Addr())); err != nil {
				return fail(fmt.Errorf("birthday: open socket: %w", err))
			}
		}
		conns = []net.PacketConn{c}
		rate := min(cmp.Or(cfg.Rate, DefaultBirthdayRate), MaxBirthdayRate)
		pl = scanPlan(cfg.Peer, rate, rand.N[uint64](1<<63))
	default:
		closeConn(cfg.Conn)
		return fail(fmt.Errorf("birthday: role %q: want %q or %q", cfg.Role, Spread, Scan))
	}
	ttl := cmp.Or(cfg.OpeningTTL, DefaultOpeningTTL)
	e := newEngine(cfg.Session, conns, max(ttl, 0), cfg.Logger)
	win, err := e.run(ctx, timeout+max(cfg.Hold, 0), held(pl, cfg.Hold))
	e.result(&res, win)
	if err != nil {
		return fail(err)
	}
	return newPath(res, conns[win], cfg.Session), res, nil
}

// scanPlan probes peer itself first, then every port of peer's address
// from minScanPort up in a random order without repeats, rate per second.
func scanPlan(peer netip.AddrPort, rate int, seed uint64) plan {
	perm := scanOrder(peer.Port(), seed)
	perTick := float64(rate) * birthdayTick.Seconds()
	sent := 0
	return func(i int) (step, bool) {
		if i == 0 {
			return step{targets: []pair{{remote: peer, kind: Srflx}}}, true
		}
		upto := min(int(float64(i)*perTick), len(perm))
		if sent >= len(perm) {
			return step{}, false
		}
		var ts []pair
		for ; sent < upto; sent++ {
			ts = append(ts, pair{remote: netip.AddrPortFrom(peer.Addr(), perm[sent]), kind: Prflx})
		}
		return step{at: time.Duration(i) * birthdayTick, targets: ts}, true
	}
}

// scanOrder is a random permutation of the scanned ports, without skip.
func scanOrder(skip uint16, seed uint64) []uint16 {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	ports := make([]uint16, 0, 65536-minScanPort)
	for p := minScanPort; p <= 65535; p++ {
		if uint16(p) != skip {
			ports = append(ports, uint16(p))
		}
	}
	r.Shuffle(len(ports), func(i, j int) { ports[i], ports[j] = ports[j], ports[i] })
	return ports
}
