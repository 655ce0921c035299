package server

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/pion/stun/v3"

	"github.com/natlab/natlab/internal/netaddr"
)

// inspect checks a TURN frame before pion/turn sees it.
//
// Authenticated requests whose user is unknown, whose ephemeral
// credentials expired or whose MESSAGE-INTEGRITY does not check are
// answered 401 here, as RFC 5389 §10.2.2 asks (pion/turn answers 400).
// CreatePermission and ChannelBind requests naming a refused peer are
// answered 403 Forbidden, signed with the requester's key (pion/turn
// would answer without an error code); refused Send indications are
// dropped. pass is false when the frame must not reach pion/turn; reply,
// if set, goes back to the sender.
func (t *turnRelay) inspect(b []byte) (reply []byte, pass bool) {
	reply, pass, _ = t.inspectAuth(b)
	return reply, pass
}

// inspectAuth is inspect that also says whether b carried credentials
// that check.
func (t *turnRelay) inspectAuth(b []byte) (reply []byte, pass, authed bool) {
	if len(b) < headerSize || b[0]&0xC0 != 0 {
		return nil, true, false // ChannelData: its channel was vetted when bound
	}
	typ := binary.BigEndian.Uint16(b[0:2])
	method, class := stun.Method(typ&^0x0110), typ&0x0110
	isReq := class == 0
	authMethod := isReq && (method == stun.MethodAllocate || method == stun.MethodRefresh ||
		method == stun.MethodCreatePermission || method == stun.MethodChannelBind)
	peerMethod := (isReq && (method == stun.MethodCreatePermission || method == stun.MethodChannelBind)) ||
		(class == 0x0010 && method == stun.MethodSend)
	if !authMethod && !peerMethod {
		return nil, true, false
	}
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if err := m.Decode(); err != nil {
		return nil, true, false // malformed: pion/turn rejects it
	}
	var key []byte
	if authMethod && m.Contains(stun.AttrMessageIntegrity) {
		var user stun.Username
		var realm stun.Realm
		if user.GetFrom(m) != nil || realm.GetFrom(m) != nil {
			return nil, true, false // pion/turn answers 400
		}
		k, ok := t.key(user.String(), realm.String())
		if !ok || stun.MessageIntegrity(k).Check(m) != nil {
			t.authFailures.Add(1)
			return t.unauthorized(m, method), false, false
		}
		key = k
	}
	authed = key != nil
	if !peerMethod {
		return nil, true, authed
	}
	refused := t.refusedPeer(m, method)
	if refused == nil {
		return nil, true, authed
	}
	t.peersRefused.Add(1)
	if !isReq {
		return nil, false, authed
	}
	if key == nil {
		return nil, true, false // unauthenticated: pion/turn answers 401
	}
	res, err := stun.Build(stun.NewTransactionIDSetter(m.TransactionID),
		stun.NewType(method, stun.ClassErrorResponse),
		&stun.ErrorCodeAttribute{Code: stun.CodeForbidden, Reason: []byte("Forbidden: " + refused.Error())},
		stun.NewSoftware(DefaultSoftware), stun.MessageIntegrity(key), stun.Fingerprint)
	if err != nil {
		return nil, false, authed
	}
	t.log.Debug("turn peer refused", "err", refused)
	return res.Raw, false, authed
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

// unauthorized is the 401 for bad credentials: REALM, and the request's
// NONCE back (pion/turn issued it; the credentials, not the nonce, are
// wrong).
func (t *turnRelay) unauthorized(m *stun.Message, method stun.Method) []byte {
	setters := []stun.Setter{stun.NewTransactionIDSetter(m.TransactionID),
		stun.NewType(method, stun.ClassErrorResponse),
		&stun.ErrorCodeAttribute{Code: stun.CodeUnauthorized, Reason: []byte("Unauthorized")},
		stun.NewRealm(t.realm)}
	var nonce stun.Nonce
	if nonce.GetFrom(m) == nil {
		setters = append(setters, nonce)
	}
	setters = append(setters, stun.NewSoftware(DefaultSoftware), stun.Fingerprint)
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
type demuxSet struct{ shards []*demuxConn }

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
	in   chan datagram
	done chan struct{}
	once sync.Once

	mu       sync.Mutex
	deadline time.Time
	dlChange chan struct{}
}

type datagram struct {
	b    *[]byte // from bufPool; ReadFrom returns it
	n    int
	from net.Addr
}

func newDemuxConn(c net.PacketConn) *demuxConn {
	return &demuxConn{PacketConn: c, in: make(chan datagram, turnQueue), done: make(chan struct{}), dlChange: make(chan struct{})}
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

func (d *demuxConn) WriteTo(p []byte, to net.Addr) (int, error) {
	select {
	case <-d.done:
		return 0, net.ErrClosed
	default:
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
		c, err := l.Listener.Accept()
		ok := true
		if err != nil {
			if errors.Is(err, net.ErrClosed) || !acceptPause(l.done, &delay) {
				return nil, net.ErrClosed
			}
			l.t.log.Debug("tls accept", "err", err)
			continue
		}
		delay = 0
		if c, ok = l.t.limit.admit(c); !ok {
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
	src     netip.Addr
	first   bool
	authed  bool
	pending []byte
	once    sync.Once

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
	return &guardConn{Conn: c, t: t, fr: newFrameReader(c, prefix), first: true, src: netaddr.AddrPort(c.RemoteAddr()).Addr(),
		wkick: make(chan struct{}, 1), wdone: make(chan struct{})}
}

// maxQueuedWrite bounds the bytes queued for the flusher; beyond it Write
// reports the stream as stuck, as a full socket buffer past the write
// timeout would.
const maxQueuedWrite = 4 << 20

// Write queues p for the flusher goroutine.
func (g *guardConn) Write(p []byte) (int, error) {
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
			return 0, err
		}
		g.first = false
		if frame == nil {
			continue // too large to relay: pion/turn would drop it too
		}
		if isTURNRequest(frame) && !g.t.reqLim.Allow(g.src) {
			continue // over the source's rate: unanswered, as on UDP
		}
		reply, pass, authed := g.t.inspectAuth(frame)
		if authed && !g.authed {
			g.authed = true
			g.fr.grow(streamBufferRelay)
		}
		if reply != nil {
			if _, err := g.Write(reply); err != nil {
				return 0, err
			}
		}
		if pass {
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
