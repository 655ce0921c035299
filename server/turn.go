package server

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/logging"
	"github.com/pion/stun/v3"
	"github.com/pion/transport/v4"
	"github.com/pion/turn/v4"

	"github.com/natlab/natlab/internal/netaddr"
	"github.com/natlab/natlab/internal/opslog"
	"github.com/natlab/natlab/internal/ratelimit"
)

// DefaultRealm is the TURN realm when none is configured.
const DefaultRealm = "natlab"

// DefaultUserQuota is the number of concurrent allocations one user may
// hold by default: a probe needs one or two, a WebRTC call a handful.
const DefaultUserQuota = 10

// TURN timing, each with why.
const (
	// turnIdleTimeout closes a TURN-over-TCP/TLS connection that sends
	// nothing: a client holding an allocation must refresh it within its
	// lifetime, at most one hour (pion/turn's cap), so this only drops the
	// dead.
	turnIdleTimeout = time.Hour + time.Minute
	// turnFirstFrameTimeout bounds the TLS handshake and first request of
	// a new connection: both take one or two round trips.
	turnFirstFrameTimeout = 10 * time.Second
	// turnQueue is how many datagrams wait for the TURN goroutine of one
	// UDP socket before more are dropped, as a kernel socket buffer would.
	turnQueue = 1024
)

// turnPreAuthIdle closes a stream that has sent no request with valid
// credentials and then falls silent: a client answers a 401 within a
// round trip, so only idle attackers hold connections this long. (A
// variable so a test can shorten it.)
var turnPreAuthIdle = 30 * time.Second

// TURNConfig enables the TURN relay of a Server. Relaying needs at least
// one credential source (Users or Secret).
type TURNConfig struct {
	// Realm of the long-term credentials; "" means DefaultRealm.
	Realm string
	// Users are long-term credentials, user → password.
	Users map[string]string
	// Secret, if set, also accepts TURN REST API ephemeral credentials
	// (coturn's use-auth-secret): username "expiry:user", password
	// base64(HMAC-SHA1(Secret, username)).
	Secret string
	// UserQuota is the maximum of concurrent allocations per username
	// (486 Allocation Quota Reached beyond it); 0 means DefaultUserQuota,
	// negative means unlimited.
	UserQuota int
	// RelayIP is the relayed address given to clients; invalid means the
	// primary listen IP (which must then be specific).
	RelayIP netip.Addr
	// Peers decides which peer addresses may be relayed to; its Self is
	// filled in with the server's own addresses.
	Peers PeerPolicy
	// TLS, if set, serves TURN over TLS on TLSAddr.
	TLS     *tls.Config
	TLSAddr netip.AddrPort
	// Now is the clock for ephemeral credential expiry (nil: time.Now).
	Now func() time.Time
}

// TURNStats are the relay's counters since start.
type TURNStats struct {
	Allocations      int64  `json:"allocations"`       // allocations alive now
	AllocationsTotal uint64 `json:"allocations_total"` // allocations created
	AuthFailures     uint64 `json:"auth_failures"`     // requests with bad or expired credentials
	QuotaRejections  uint64 `json:"quota_rejections"`  // 486 sent
	PeersRefused     uint64 `json:"peers_refused"`     // permissions, channels and sends refused by the peer policy
	TCPConnections   uint64 `json:"tcp_connections"`   // TURN connections over TCP and TLS accepted
	StaleNonces      uint64 `json:"stale_nonces"`      // signed requests whose nonce was not the sender's (438 sent)
}

// turnRelay is the TURN side of a Server.
type turnRelay struct {
	cfg    TURNConfig
	realm  string
	log    *slog.Logger
	srv    *turn.Server
	policy PeerPolicy

	demux   map[netip.AddrPort]*demuxSet
	tcp     *chanListener // TCP connections handed over by the STUN server
	tls     net.Listener  // nil without TLS
	tlsErr  error
	nonces  *nonceBinder
	limit   *connLimiter       // shared with the STUN server
	reqLim  *ratelimit.Limiter // TURN requests over TCP/TLS; the server limits those over UDP
	ops     *opslog.Log
	mu      sync.Mutex
	perUser map[string]int              // live allocations by username
	allocs  map[string]allocInfo        // by 5-tuple key
	relays  map[netip.AddrPort]int      // live relayed addresses
	conns   map[net.Conn]struct{}       // TCP/TLS connections, closed on shutdown
	sockets map[net.PacketConn]struct{} // relay sockets, closed on shutdown
	closed  bool
	// The ChannelData fast path (turn_fast.go): relay sockets by port,
	// allocations' relay sockets by 5-tuple, and their routes.
	relayByPort map[uint16]*trackedPacketConn
	tuples      map[tuple]*trackedPacketConn
	routes      map[tuple][]*fastRoute

	allocations                                                   atomic.Int64
	allocationsTotal, authFailures, quotaRejections, peersRefused atomic.Uint64
	tcpConns, staleNonces                                         atomic.Uint64
	fastRelayed                                                   atomic.Uint64 // datagrams the fast path relayed
	relay6                                                        bool          // relayed addresses are IPv6 (RFC 6156)
}

type allocInfo struct {
	user  string
	relay netip.AddrPort
}

func tupleKey(src, dst net.Addr, proto string) string {
	return proto + " " + src.String() + " " + dst.String()
}

// startTURN starts pion/turn behind the server's UDP sockets (through
// demultiplexers), its TCP listener (through hand-over) and, if
// configured, a TLS listener of its own.
func (s *Server) startTURN(n transport.Net, cfg TURNConfig) error {
	if len(cfg.Users) == 0 && cfg.Secret == "" {
		return errors.New("turn: no credentials (want users or a shared secret)")
	}
	t := &turnRelay{
		cfg: cfg, realm: cfg.Realm, log: s.log, limit: s.connLim, reqLim: s.turnLim, ops: s.ops,
		demux: map[netip.AddrPort]*demuxSet{}, perUser: map[string]int{}, allocs: map[string]allocInfo{},
		relays: map[netip.AddrPort]int{}, conns: map[net.Conn]struct{}{}, sockets: map[net.PacketConn]struct{}{},
		relayByPort: map[uint16]*trackedPacketConn{}, tuples: map[tuple]*trackedPacketConn{}, routes: map[tuple][]*fastRoute{},
	}
	if t.realm == "" {
		t.realm = DefaultRealm
	}
	if t.cfg.Now == nil {
		t.cfg.Now = time.Now
	}
	t.nonces = newNonceBinder(t.cfg.Now)
	if t.cfg.UserQuota == 0 {
		t.cfg.UserQuota = DefaultUserQuota
	}
	relayIP := cfg.RelayIP
	if !relayIP.IsValid() {
		relayIP = s.addrs.Primary.Addr()
	}
	if relayIP.IsUnspecified() {
		return errors.New("turn: a relay IP is needed when listening on an unspecified address")
	}
	bind := s.addrs.Primary.Addr()
	t.policy = cfg.Peers
	t.policy.Self = append(append([]netip.Addr(nil), cfg.Peers.Self...), relayIP, s.addrs.Primary.Addr())
	if s.addrs.AltIP.IsValid() {
		t.policy.Self = append(t.policy.Self, s.addrs.AltIP)
	}
	gen := &trackingGenerator{t: t, RelayAddressGeneratorStatic: turn.RelayAddressGeneratorStatic{
		RelayAddress: relayIP.AsSlice(), Address: bind.String(), Net: n,
	}, bind: bind}
	t.relay6 = relayIP.Is6()
	perm := func(_ net.Addr, ip net.IP) bool {
		a, ok := netip.AddrFromSlice(ip)
		if !ok || t.policy.CheckIP(a) != nil {
			t.peersRefused.Add(1)
			return false
		}
		return true
	}
	var pcs []turn.PacketConnConfig
	for ap, c := range s.conns {
		set := &demuxSet{fast: newFastPath(t, c.LocalAddr(), c, nil)}
		for range turnShards() {
			d := newDemuxConn(c, t.nonces, set.fast)
			set.shards = append(set.shards, d)
			pcs = append(pcs, turn.PacketConnConfig{PacketConn: d, RelayAddressGenerator: gen, PermissionHandler: perm})
		}
		t.demux[ap] = set
	}
	var lcs []turn.ListenerConfig
	if s.tcp != nil {
		t.tcp = newChanListener(s.tcp.Addr())
		lcs = append(lcs, turn.ListenerConfig{Listener: t.tcp, RelayAddressGenerator: gen, PermissionHandler: perm})
	}
	if cfg.TLS != nil {
		l, err := n.ListenTCP(tcpNetwork(cfg.TLSAddr.Addr()), net.TCPAddrFromAddrPort(cfg.TLSAddr))
		if err != nil {
			t.closeDemux()
			return fmt.Errorf("turn: listen tls %s: %w", cfg.TLSAddr, err)
		}
		t.tls = newGuardListener(tls.NewListener(l, cfg.TLS), t)
		lcs = append(lcs, turn.ListenerConfig{Listener: t.tls, RelayAddressGenerator: gen, PermissionHandler: perm})
	}
	logs := logging.NewDefaultLoggerFactory()
	logs.DefaultLogLevel = logging.LogLevelDisabled
	srv, err := turn.NewServer(turn.ServerConfig{
		PacketConnConfigs: pcs,
		ListenerConfigs:   lcs,
		LoggerFactory:     logs,
		Realm:             t.realm,
		AuthHandler:       t.auth,
		QuotaHandler:      t.quota,
		EventHandler: turn.EventHandler{
			OnAuth:              t.onAuth,
			OnAllocationCreated: t.onCreated,
			OnAllocationDeleted: t.onDeleted,
		},
	})
	if err != nil {
		t.closeDemux()
		if t.tls != nil {
			_ = t.tls.Close()
		}
		return fmt.Errorf("turn: %w", err)
	}
	t.srv = srv
	s.turn = t
	return nil
}

// key returns the long-term credential key (MD5 of user:realm:password)
// for a username, or false.
func (t *turnRelay) key(username, realm string) ([]byte, bool) {
	if realm != t.realm {
		return nil, false
	}
	if pw, ok := t.cfg.Users[username]; ok {
		return turn.GenerateAuthKey(username, realm, pw), true
	}
	if t.cfg.Secret == "" {
		return nil, false
	}
	exp, ok := ephemeralExpiry(username)
	if !ok || !t.cfg.Now().Before(exp) {
		return nil, false
	}
	return turn.GenerateAuthKey(username, realm, EphemeralPassword(t.cfg.Secret, username)), true
}

func (t *turnRelay) auth(username, realm string, from net.Addr) ([]byte, bool) {
	k, ok := t.key(username, realm)
	if !ok {
		t.authFailures.Add(1)
		t.ops.Event(slog.LevelWarn, "turn-auth-failure", "TURN authentication failed: unknown user or expired credential", "user", username, "from", from)
	}
	return k, ok
}

func (t *turnRelay) onAuth(src, _ net.Addr, _, username, _ string, method string, verdict bool) {
	if !verdict {
		t.authFailures.Add(1) // a known user with the wrong password
		t.ops.Event(slog.LevelWarn, "turn-auth-failure", "TURN authentication failed: wrong password", "user", username, "from", src, "method", method)
	}
}

func (t *turnRelay) quota(username, _ string, _ net.Addr) bool {
	if t.cfg.UserQuota < 0 {
		return true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	// Concurrent allocations of one user on several connections can pass
	// this check together before either is counted; the overshoot is
	// bounded by the number of connections racing.
	if t.perUser[username] >= t.cfg.UserQuota {
		t.quotaRejections.Add(1)
		t.ops.Event(slog.LevelWarn, "turn-quota", "TURN allocation refused: user quota reached", "user", username, "quota", t.cfg.UserQuota)
		return false
	}
	return true
}

func (t *turnRelay) onCreated(src, dst net.Addr, proto, username, _ string, relay net.Addr, _ int) {
	ra := netaddr.AddrPort(relay)
	t.mu.Lock()
	t.perUser[username]++
	t.allocs[tupleKey(src, dst, proto)] = allocInfo{user: username, relay: ra}
	t.relays[ra]++
	if rc := t.relayByPort[ra.Port()]; rc != nil {
		t.tuples[tuple{netaddr.AddrPort(src), netaddr.AddrPort(dst)}] = rc
	}
	t.mu.Unlock()
	t.allocations.Add(1)
	t.allocationsTotal.Add(1)
	t.log.Info("TURN allocation", "user", username, "from", src, "transport", proto, "relay", ra)
}

func (t *turnRelay) onDeleted(src, dst net.Addr, proto, _, _ string) {
	k := tupleKey(src, dst, proto)
	t.mu.Lock()
	t.dropTupleLocked(tuple{netaddr.AddrPort(src), netaddr.AddrPort(dst)})
	a, ok := t.allocs[k]
	if ok {
		delete(t.allocs, k)
		if t.perUser[a.user]--; t.perUser[a.user] <= 0 {
			delete(t.perUser, a.user)
		}
		if t.relays[a.relay]--; t.relays[a.relay] <= 0 {
			delete(t.relays, a.relay)
		}
	}
	t.mu.Unlock()
	if ok {
		t.allocations.Add(-1)
		t.log.Info("TURN allocation ended", "user", a.user, "from", src, "transport", proto, "relay", a.relay)
	}
}

// isRelay reports whether ap is a live relayed address of this server.
func (t *turnRelay) isRelay(ap netip.AddrPort) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.relays[ap] > 0
}

func (t *turnRelay) stats() TURNStats {
	return TURNStats{
		Allocations: t.allocations.Load(), AllocationsTotal: t.allocationsTotal.Load(),
		AuthFailures: t.authFailures.Load(), QuotaRejections: t.quotaRejections.Load(),
		PeersRefused: t.peersRefused.Load(), TCPConnections: t.tcpConns.Load(), StaleNonces: t.staleNonces.Load(),
	}
}

// track registers a TCP or TLS connection so shutdown can close it;
// false means the relay is closing and the caller must close c.
func (t *turnRelay) track(c net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.conns[c] = struct{}{}
	t.tcpConns.Add(1)
	return true
}

func (t *turnRelay) untrack(c net.Conn) {
	t.mu.Lock()
	delete(t.conns, c)
	t.mu.Unlock()
}

// handoff gives a TCP connection whose first frame (already read) is a
// TURN request to pion/turn.
func (t *turnRelay) handoff(c net.Conn, first []byte) bool {
	if t.tcp == nil {
		return false
	}
	g := newGuardConn(c, t, first)
	if !t.track(g) {
		return false
	}
	if !t.tcp.push(g) {
		t.untrack(g)
		return false
	}
	return true
}

func (t *turnRelay) closeDemux() {
	for _, set := range t.demux {
		for _, d := range set.shards {
			_ = d.Close()
		}
	}
}

// close stops pion/turn and closes every socket it was given or made.
func (t *turnRelay) close() error {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
	err := t.srv.Close() // closes the demultiplexers and listeners
	t.mu.Lock()
	conns := make([]net.Conn, 0, len(t.conns))
	for c := range t.conns {
		conns = append(conns, c)
	}
	socks := make([]net.PacketConn, 0, len(t.sockets))
	for c := range t.sockets {
		socks = append(socks, c)
	}
	t.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
	// pion closes relay sockets from its own goroutines after its read
	// loops end; closing them here makes shutdown complete on return.
	for _, c := range socks {
		_ = c.Close()
	}
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// trackingGenerator records relay sockets so shutdown can close them.
type trackingGenerator struct {
	turn.RelayAddressGeneratorStatic
	t *turnRelay
	// bind is the IP relay sockets are opened on. pion/turn asks for
	// "udp4" whatever the server's family and joins Address and port
	// without brackets, so an IPv6 relay opens its socket here.
	bind netip.Addr
}

// allocate opens a relay socket of the server's family.
func (g *trackingGenerator) allocate(network string, port int) (net.PacketConn, net.Addr, error) {
	if g.bind.Is4() {
		return g.RelayAddressGeneratorStatic.AllocatePacketConn(network, port)
	}
	c, err := g.Net.ListenPacket("udp6", net.JoinHostPort(g.bind.String(), strconv.Itoa(port)))
	if err != nil {
		return nil, nil, err
	}
	ua, ok := c.LocalAddr().(*net.UDPAddr)
	if !ok {
		_ = c.Close()
		return nil, nil, fmt.Errorf("turn: relay socket address %v is not UDP", c.LocalAddr())
	}
	return c, &net.UDPAddr{IP: g.RelayAddress, Port: ua.Port}, nil
}

func (g *trackingGenerator) AllocatePacketConn(network string, port int) (net.PacketConn, net.Addr, error) {
	c, a, err := g.allocate(network, port)
	if err != nil {
		return nil, nil, err
	}
	g.t.mu.Lock()
	if g.t.closed {
		g.t.mu.Unlock()
		_ = c.Close()
		return nil, nil, net.ErrClosed
	}
	tc := &trackedPacketConn{PacketConn: c, t: g.t}
	g.t.sockets[tc] = struct{}{}
	la := netaddr.AddrPort(c.LocalAddr())
	tc.port = la.Port()
	if uc, ok := c.(*net.UDPConn); ok {
		tc.batch = newBatchConn(uc)
	}
	g.t.relayByPort[tc.port] = tc
	g.t.mu.Unlock()
	return tc, a, nil
}

type trackedPacketConn struct {
	net.PacketConn
	t    *turnRelay
	once sync.Once
	err  error
	// last is the source of the previous datagram and its net.Addr: a
	// relay socket hears from a few peers, so ReadFrom hands out the same
	// (never modified) address again instead of allocating one per packet.
	last atomic.Pointer[lastAddr]
	// peers are the fast path's routes by peer address (turn_fast.go);
	// fbuf, used only by the one reader, has room for a ChannelData
	// header before the payload.
	peers  sync.Map
	routed atomic.Bool // a route was ever installed: read in batches
	port   uint16
	fbuf   []byte
	rd     *relayReader
	batch  batchConn // for sendmmsg, kernel sockets only
}

type lastAddr struct {
	ap   netip.AddrPort
	addr *net.UDPAddr
}

// ReadFrom is the socket's ReadFrom, reusing the previous source address
// when it repeats.
func (c *trackedPacketConn) ReadFrom(p []byte) (int, net.Addr, error) {
	uc, ok := c.PacketConn.(*net.UDPConn)
	if !ok {
		return c.PacketConn.ReadFrom(p)
	}
	// Batched reads start with the socket's first route (c.batch is set
	// for IPv4 kernel sockets); until then one datagram per call.
	for {
		if c.routed.Load() && c.batch != nil {
			if c.rd == nil || c.rd.max != len(p) {
				c.rd = newRelayReader(uc, len(p))
			}
			b, from, err := c.rd.next(c)
			if err != nil {
				return 0, nil, err
			}
			return copy(p, b), c.addrOf(from), nil
		}
		if len(c.fbuf) != 4+len(p)+3 { // pion's buffer bounds the datagram, as before
			c.fbuf = make([]byte, 4+len(p)+3)
		}
		n, ap, err := uc.ReadFromUDPAddrPort(c.fbuf[4 : 4+len(p)])
		if err != nil {
			return 0, nil, err
		}
		if !c.toClient(c.fbuf, n, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil) {
			return copy(p, c.fbuf[4:4+n]), c.addrOf(ap), nil
		}
	}
}

// addrOf is ap as a net.Addr, the previous one if it repeats.
func (c *trackedPacketConn) addrOf(ap netip.AddrPort) net.Addr {
	if l := c.last.Load(); l != nil && l.ap == ap {
		return l.addr
	}
	a := net.UDPAddrFromAddrPort(ap)
	c.last.Store(&lastAddr{ap: ap, addr: a})
	return a
}

func (c *trackedPacketConn) Close() error {
	c.once.Do(func() {
		c.t.mu.Lock()
		delete(c.t.sockets, c)
		if c.t.relayByPort[c.port] == c {
			delete(c.t.relayByPort, c.port)
		}
		c.peers.Range(func(_, v any) bool {
			c.t.dropRouteLocked(v.(*fastRoute))
			return true
		})
		c.t.mu.Unlock()
		c.err = c.PacketConn.Close()
	})
	return c.err
}

// isTURN reports whether a datagram on a shared port belongs to TURN:
// ChannelData (first byte 0x40–0x7F) or a STUN message with the magic
// cookie whose method is not Binding.
func isTURN(b []byte) bool {
	if len(b) >= 4 && b[0] >= 0x40 && b[0] <= 0x7F {
		return true
	}
	if len(b) < headerSize || b[0]&0xC0 != 0 || !stun.IsMessage(b) {
		return false
	}
	typ := uint16(b[0])<<8 | uint16(b[1])
	return typ&^0x0110 != uint16(stun.MethodBinding)
}
