package server

import (
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/pion/stun/v3"

	"github.com/natlab/natlab/internal/netaddr"
)

// verdict is what inspect decided about a TURN frame.
type verdict struct {
	reply  []byte       // if set, goes back to the sender
	fwd    []byte       // if set, goes to pion/turn instead of the frame (re-signed)
	pass   bool         // the frame (or fwd) goes to pion/turn
	authed bool         // the frame carried credentials that check
	bind   *bindRequest // an authenticated ChannelBind the policy allowed
}

// inspect checks a TURN frame from a client before pion/turn sees it.
//
// Authenticated requests whose user is unknown, whose ephemeral
// credentials expired or whose MESSAGE-INTEGRITY does not check are
// answered 401 here, as RFC 5389 §10.2.2 asks (pion/turn answers 400);
// those whose nonce was not issued to this client address are answered
// 438 (see turn_nonce.go), the others re-signed with pion's nonce.
// CreatePermission and ChannelBind requests naming a refused peer are
// answered 403 Forbidden, signed with the requester's key (pion/turn
// would answer without an error code); refused Send indications are
// dropped.
func (t *turnRelay) inspect(b []byte, from netip.AddrPort) verdict {
	if len(b) < headerSize || b[0]&0xC0 != 0 {
		return verdict{pass: true} // ChannelData: its channel was vetted when bound
	}
	typ := binary.BigEndian.Uint16(b[0:2])
	method, class := stun.Method(typ&^0x0110), typ&0x0110
	isReq := class == 0
	authMethod := isReq && (method == stun.MethodAllocate || method == stun.MethodRefresh ||
		method == stun.MethodCreatePermission || method == stun.MethodChannelBind)
	peerMethod := (isReq && (method == stun.MethodCreatePermission || method == stun.MethodChannelBind)) ||
		(class == 0x0010 && method == stun.MethodSend)
	if !authMethod && !peerMethod {
		return verdict{pass: true}
	}
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if err := m.Decode(); err != nil {
		return verdict{pass: true} // malformed: pion/turn rejects it
	}
	var v verdict
	var key []byte
	if authMethod && m.Contains(stun.AttrMessageIntegrity) {
		if key, v = t.checkAuth(m, method, from); key == nil {
			return v
		}
	}
	if key != nil && method == stun.MethodAllocate {
		if r := t.familyRefused(m, key); r != nil {
			return verdict{reply: r}
		}
	}
	v.pass = true
	if !peerMethod {
		return v
	}
	refused := t.refusedPeer(m, method)
	if refused == nil {
		if key != nil && method == stun.MethodChannelBind && isReq {
			v.bind = bindOf(m)
		}
		return v
	}
	t.peersRefused.Add(1)
	v.pass, v.fwd = false, nil
	t.ops.Event(slog.LevelInfo, "turn-peer-refused", "TURN peer refused by the relay policy", "method", method.String(), "reason", refused.Error())
	if !isReq {
		return v
	}
	if key == nil {
		return verdict{pass: true} // unauthenticated: pion/turn answers 401
	}
	res, err := stun.Build(stun.NewTransactionIDSetter(m.TransactionID),
		stun.NewType(method, stun.ClassErrorResponse),
		&stun.ErrorCodeAttribute{Code: stun.CodeForbidden, Reason: []byte("Forbidden: " + refused.Error())},
		stun.NewSoftware(DefaultSoftware), stun.MessageIntegrity(key), stun.Fingerprint)
	if err == nil {
		v.reply = res.Raw
	}
	t.log.Debug("turn peer refused", "err", refused)
	return v
}

// checkAuth checks the credentials and nonce of a signed request; the
// key is nil when the request stops here (v says how it is answered).
// Otherwise v carries the request re-signed with pion's nonce.
func (t *turnRelay) checkAuth(m *stun.Message, method stun.Method, from netip.AddrPort) ([]byte, verdict) {
	var user stun.Username
	var realm stun.Realm
	if user.GetFrom(m) != nil || realm.GetFrom(m) != nil {
		return nil, verdict{pass: true} // pion/turn answers 400
	}
	k, ok := t.key(user.String(), realm.String())
	if !ok || stun.MessageIntegrity(k).Check(m) != nil {
		t.authFailures.Add(1)
		t.ops.Event(slog.LevelWarn, "turn-auth-failure", "TURN authentication failed", "user", user.String(), "from", from, "method", method.String(), "known", ok)
		return nil, verdict{reply: t.unauthorized(m, method, from)}
	}
	fwd, ok := t.nonces.incoming(m, from, k)
	if !ok {
		t.staleNonces.Add(1)
		return nil, verdict{reply: t.nonces.stale(m, method, t.realm, from)}
	}
	return k, verdict{fwd: fwd, authed: true}
}

// refusedPeer says why a peer named in m is refused, or nil.
func (t *turnRelay) refusedPeer(m *stun.Message, method stun.Method) error {
	for _, a := range m.Attributes {
		if a.Type != stun.AttrXORPeerAddress {
			continue
		}
		tmp := &stun.Message{TransactionID: m.TransactionID}
		tmp.Add(stun.AttrXORPeerAddress, a.Value)
		var pa stun.XORMappedAddress
		if err := pa.GetFromAs(tmp, stun.AttrXORPeerAddress); err != nil {
			continue
		}
		ip, ok := netip.AddrFromSlice(pa.IP)
		if !ok {
			continue
		}
		ap := netip.AddrPortFrom(ip.Unmap(), uint16(pa.Port))
		var err error
		if method == stun.MethodCreatePermission {
			// A permission is per IP; ports are checked when data flows.
			err = t.policy.CheckIP(ap.Addr())
		} else {
			err = t.policy.CheckPeer(ap, t.isRelay)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// unauthorized is the 401 for bad credentials: REALM and a NONCE for
// the sender, so a client may try again.
func (t *turnRelay) unauthorized(m *stun.Message, method stun.Method, from netip.AddrPort) []byte {
	setters := []stun.Setter{stun.NewTransactionIDSetter(m.TransactionID),
		stun.NewType(method, stun.ClassErrorResponse),
		&stun.ErrorCodeAttribute{Code: stun.CodeUnauthorized, Reason: []byte("Unauthorized")},
		stun.NewRealm(t.realm), stun.NewNonce(t.nonces.issue(from)),
		stun.NewSoftware(DefaultSoftware), stun.Fingerprint}
	res, err := stun.Build(setters...)
	if err != nil {
		return nil
	}
	return res.Raw
}

// turnShards is how many pion/turn read loops serve one UDP socket: pion
// handles a socket's client datagrams in one goroutine, so a busy relay
// would use one core; clients are spread over the shards by source
// address, which keeps each client's datagrams in order and its
// allocation in one shard.
func turnShards() int { return 2 * runtime.GOMAXPROCS(0) }

// demuxSet is the shards of one socket.
type demuxSet struct {
	shards []*demuxConn
	fast   *fastPath
}

// push hands a datagram to its source's shard.
func (s *demuxSet) push(b []byte, from net.Addr) {
	var h uint32 = 2166136261 // FNV-1a over the source address
	if ua, ok := from.(*net.UDPAddr); ok {
		for _, x := range ua.IP {
			h = (h ^ uint32(x)) * 16777619
		}
		h = (h ^ uint32(ua.Port)) * 16777619
		h = (h ^ uint32(ua.Port>>8)) * 16777619
	} else {
		for _, x := range []byte(from.String()) {
			h = (h ^ uint32(x)) * 16777619
		}
	}
	s.shards[h%uint32(len(s.shards))].push(b, from)
}

// demuxConn is the view pion/turn has of a UDP socket shared with the
// STUN server: it reads the datagrams the STUN read loop hands it and
// writes straight to the socket. Closing it leaves the socket open.
type demuxConn struct {
	net.PacketConn
	nonces *nonceBinder
	fast   *fastPath
	in     chan datagram
	done   chan struct{}
	once   sync.Once

	mu       sync.Mutex
	deadline time.Time
	dlChange chan struct{}
}

type datagram struct {
	b    *[]byte // from bufPool; ReadFrom returns it
	n    int
	from net.Addr
}

func newDemuxConn(c net.PacketConn, nonces *nonceBinder, fast *fastPath) *demuxConn {
	return &demuxConn{PacketConn: c, nonces: nonces, fast: fast, in: make(chan datagram, turnQueue), done: make(chan struct{}), dlChange: make(chan struct{})}
}

// push queues a copy of b; it drops the datagram when the queue is full.
// The copy lives in a pooled buffer, so relaying allocates no garbage per
// datagram.
func (d *demuxConn) push(b []byte, from net.Addr) {
	bp := bufPool.Get().(*[]byte)
	n := copy(*bp, b)
	select {
	case d.in <- datagram{b: bp, n: n, from: from}:
	default:
		bufPool.Put(bp)
	}
}

func (d *demuxConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		d.mu.Lock()
		dl, changed := d.deadline, d.dlChange
		d.mu.Unlock()
		var (
			timeout <-chan time.Time
			tm      *time.Timer
		)
		if !dl.IsZero() {
			wait := time.Until(dl)
			if wait <= 0 {
				return 0, nil, os.ErrDeadlineExceeded
			}
			tm = time.NewTimer(wait)
			timeout = tm.C
		}
		n, from, err, again := 0, net.Addr(nil), error(nil), false
		select {
		case dg := <-d.in:
			n, from = copy(p, (*dg.b)[:dg.n]), dg.from
			bufPool.Put(dg.b)
		case <-d.done:
			err = net.ErrClosed
		case <-timeout:
			err = os.ErrDeadlineExceeded
		case <-changed:
			again = true
		}
		if tm != nil {
			tm.Stop()
		}
		if !again {
			return n, from, err
		}
	}
}

// WriteTo sends pion/turn's datagram, with pion's nonces replaced by
// ones bound to the client.
func (d *demuxConn) WriteTo(p []byte, to net.Addr) (int, error) {
	select {
	case <-d.done:
		return 0, net.ErrClosed
	default:
	}
	if d.fast != nil {
		d.fast.answered(p, netaddr.AddrPort(to))
	}
	if d.nonces != nil {
		if q, changed := d.nonces.outgoing(p, netaddr.AddrPort(to)); changed {
			if _, err := d.PacketConn.WriteTo(q, to); err != nil {
				return 0, err
			}
			return len(p), nil
		}
	}
	return d.PacketConn.WriteTo(p, to)
}

func (d *demuxConn) Close() error {
	d.once.Do(func() { close(d.done) })
	return nil
}

func (d *demuxConn) SetDeadline(t time.Time) error { return d.SetReadDeadline(t) }

func (d *demuxConn) SetReadDeadline(t time.Time) error {
	d.mu.Lock()
	d.deadline = t
	close(d.dlChange)
	d.dlChange = make(chan struct{})
	d.mu.Unlock()
	return nil
}

// SetWriteDeadline does nothing: the socket is shared, and UDP writes do
// not block.
func (d *demuxConn) SetWriteDeadline(time.Time) error { return nil }

// chanListener is a net.Listener fed with connections the STUN server's
// TCP listener accepted and found to carry TURN.
type chanListener struct {
	addr net.Addr
	in   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, in: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) push(c net.Conn) bool {
	select {
	case l.in <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.in:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// guardListener wraps the TLS listener so its connections pass the peer
// policy and are closed on shutdown. Its Accept survives transient errors
// (EMFILE when file descriptors run out): pion/turn's accept loop ends
// on the first error it sees, and TURN over TLS would never accept again.
type guardListener struct {
	net.Listener
	t    *turnRelay
	done chan struct{}
	once sync.Once
}

func newGuardListener(l net.Listener, t *turnRelay) *guardListener {
	return &guardListener{Listener: l, t: t, done: make(chan struct{})}
}

func (l *guardListener) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		raw, err := l.Listener.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || !acceptPause(l.done, &delay) {
				return nil, net.ErrClosed
			}
			l.t.log.Debug("tls accept", "err", err)
			continue
		}
		delay = 0
		from := raw.RemoteAddr()
		c, ok := l.t.limit.admit(raw)
		if !ok {
			l.t.ops.Event(slog.LevelWarn, "tcp-conn-limit", "TLS connection refused: too many from one source", "from", from)
			continue
		}
		g := newGuardConn(c, l.t, nil)
		if !l.t.track(g) {
			_ = c.Close()
			return nil, net.ErrClosed
		}
		return g, nil
	}
}

func (l *guardListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// guardConn reads a TURN stream frame by frame (see frameReader),
// applies inspect to each, and hands pion/turn the frames that pass, one
// per Read. It also bounds idle time: briefly until the stream has
// authenticated, then by the allocation lifetime.
type guardConn struct {
	net.Conn
	t       *turnRelay
	fr      *frameReader
	from    netip.AddrPort
	first   bool
	authed  bool
	pending []byte
	once    sync.Once
	fast    *fastPath
	out     *batchOut // ChannelData payloads batched for sendmmsg, read goroutine only

	// Writes are coalesced: Write queues a frame and a flusher writes
	// whatever has queued in one system call, so a busy relay stream costs
	// a fraction of a syscall per frame and an idle one adds no delay.
	wmu      sync.Mutex
	wbuf     []byte
	wspare   []byte
	werr     error
	wclosed  bool
	wkick    chan struct{}
	wdone    chan struct{}
	wstarted bool
}

func newGuardConn(c net.Conn, t *turnRelay, prefix []byte) *guardConn {
	g := &guardConn{Conn: c, t: t, fr: newFrameReader(c, prefix), first: true, from: netaddr.AddrPort(c.RemoteAddr()),
		wkick: make(chan struct{}, 1), wdone: make(chan struct{})}
	g.fast = newFastPath(t, c.LocalAddr(), nil, g)
	return g
}

// streamBatch is how many ChannelData payloads from one stream read go to
// a relay socket with one sendmmsg.
const streamBatch = 16

// maxQueuedWrite bounds the bytes queued for the flusher; beyond it Write
// reports the stream as stuck, as a full socket buffer past the write
// timeout would.
const maxQueuedWrite = 4 << 20

// Write queues p, pion/turn's, for the flusher goroutine, with pion's
// nonces replaced by ones bound to this client.
func (g *guardConn) Write(p []byte) (int, error) {
	g.fast.answered(p, g.from)
	q, _ := g.t.nonces.outgoing(p, g.from)
	if _, err := g.write(q); err != nil {
		return 0, err
	}
	return len(p), nil
}

// write queues p for the flusher goroutine.
func (g *guardConn) write(p []byte) (int, error) {
	g.wmu.Lock()
	defer g.wmu.Unlock()
	if g.werr != nil {
		return 0, g.werr
	}
	if g.wclosed {
		return 0, net.ErrClosed
	}
	if len(g.wbuf)+len(p) > maxQueuedWrite {
		return 0, errors.New("turn stream: peer not reading")
	}
	if !g.wstarted {
		g.wstarted = true
		go g.flush()
	}
	g.wbuf = append(g.wbuf, p...)
	select {
	case g.wkick <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (g *guardConn) flush() {
	defer close(g.wdone)
	for range g.wkick {
		g.wmu.Lock()
		out := g.wbuf
		g.wbuf, g.wspare = g.wspare[:0], nil
		closed := g.wclosed
		g.wmu.Unlock()
		if len(out) > 0 {
			err := g.Conn.SetWriteDeadline(time.Now().Add(tcpWriteTimeout))
			if err == nil {
				_, err = g.Conn.Write(out)
			}
			g.wmu.Lock()
			g.wspare = out[:0]
			if err != nil && g.werr == nil {
				g.werr = err
			}
			g.wmu.Unlock()
			if err != nil {
				_ = g.Conn.Close() // a stuck or broken stream: let the reader see it
				return
			}
		}
		if closed {
			return
		}
	}
}

func (g *guardConn) Read(p []byte) (int, error) {
	for len(g.pending) == 0 {
		wait := turnIdleTimeout
		switch {
		case g.first:
			wait = turnFirstFrameTimeout
		case !g.authed:
			wait = turnPreAuthIdle
		}
		if err := g.Conn.SetReadDeadline(time.Now().Add(wait)); err != nil {
			return 0, err
		}
		frame, err := g.fr.next()
		if err != nil {
			if g.out != nil {
				g.out.flush() // payloads of frames before the bad one
			}
			return 0, err
		}
		g.first = false
		if g.out == nil {
			g.out = newBatchOut(streamBatch)
		}
		if frame == nil {
			g.out.flush()
			continue // too large to relay: pion/turn would drop it too
		}
		if g.fast.fromClient(frame, g.from, g.out) {
			if !g.fr.ready() {
				g.out.flush() // before the buffer holding the payloads moves
			}
			continue
		}
		g.out.flush()
		if isTURNRequest(frame) && !g.t.reqLim.Allow(g.from.Addr()) {
			g.t.ops.Event(slog.LevelWarn, "turn-rate-limit", "TURN request dropped: source over its rate limit", "from", g.from.Addr())
			continue // over the source's rate: unanswered, as on UDP
		}
		v := g.t.inspect(frame, g.from)
		if v.bind != nil && v.pass {
			g.fast.expect(g.from, v.bind)
		}
		if v.authed && !g.authed {
			g.authed = true
			g.fr.grow(streamBufferRelay)
		}
		if v.reply != nil {
			if _, err := g.write(v.reply); err != nil {
				return 0, err
			}
		}
		switch {
		case v.fwd != nil:
			g.pending = v.fwd
		case v.pass:
			g.pending = frame
		}
	}
	n := copy(p, g.pending)
	g.pending = g.pending[n:]
	return n, nil
}

// Close flushes what is queued (bounded by tcpWriteTimeout) and closes
// the connection.
func (g *guardConn) Close() error {
	var err error
	g.once.Do(func() {
		g.t.untrack(g)
		g.fast.dropAll()
		g.wmu.Lock()
		g.wclosed = true
		started := g.wstarted
		g.wmu.Unlock()
		if started {
			select {
			case g.wkick <- struct{}{}:
			default:
			}
			<-g.wdone
		}
		err = g.Conn.Close()
	})
	return err
}

// RFC 6156 REQUESTED-ADDRESS-FAMILY values.
const (
	familyIPv4 = 0x01
	familyIPv6 = 0x02
)

// familyRefused answers an authenticated Allocate asking for a relayed
// address of the other family with 440 (RFC 6156 section 4.2): pion/turn
// ignores the attribute and would hand out this server's family. Each
// natlab Server relays in one family; `natlab serve` runs one per family,
// so a client wanting IPv6 relayed addresses allocates on the IPv6 one.
func (t *turnRelay) familyRefused(m *stun.Message, key []byte) []byte {
	v, err := m.Get(stun.AttrRequestedAddressFamily)
	if err != nil || len(v) < 1 {
		return nil
	}
	have := byte(familyIPv4)
	if t.relay6 {
		have = familyIPv6
	}
	if v[0] == have {
		return nil
	}
	code, reason := stun.CodeAddrFamilyNotSupported, "Address Family not Supported"
	if v[0] != familyIPv4 && v[0] != familyIPv6 {
		code, reason = stun.CodeBadRequest, "Bad Request: unknown REQUESTED-ADDRESS-FAMILY"
	}
	res, err := stun.Build(stun.NewTransactionIDSetter(m.TransactionID),
		stun.NewType(stun.MethodAllocate, stun.ClassErrorResponse),
		&stun.ErrorCodeAttribute{Code: code, Reason: []byte(reason)},
		stun.NewSoftware(DefaultSoftware), stun.MessageIntegrity(key), stun.Fingerprint)
	if err != nil {
		return nil
	}
	return res.Raw
}
