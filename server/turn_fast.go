package server

import (
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v3"

	"github.com/natlab/natlab/internal/netaddr"
)

// The ChannelData fast path. pion/turn relays each datagram through a
// goroutine hand-off and allocates per packet; for a channel that pion
// has bound, natlab forwards ChannelData itself: from the client straight
// to the relay socket in the reader that received it, and from the peer
// straight to the client in the relay socket's reader. A route exists only
// for a ChannelBind that passed natlab's peer policy and that pion
// answered with success, lives at most fastRouteLifetime after that
// request (a permission's lifetime, shorter than the binding's), and is
// dropped with its allocation or relay socket. Anything else, and every
// expired route, goes to pion as before.

// fastRouteLifetime is pion/turn's permission lifetime (RFC 5766's five
// minutes); a ChannelBind refreshes both the binding (10 minutes) and
// the peer's permission, so both are alive this long after the request.
const fastRouteLifetime = 5 * time.Minute

// maxPendingBinds bounds the ChannelBind requests awaiting pion's answer
// per client transport; beyond it new ones simply take the slow path.
const maxPendingBinds = 256

// pendingWait is how long a ChannelBind request waits for pion's answer
// before it is forgotten.
const pendingWait = 5 * time.Second

type bindRequest struct {
	txid   [stun.TransactionIDSize]byte
	number uint16
	peer   netip.AddrPort
}

type pendingKey struct {
	client netip.AddrPort
	txid   [stun.TransactionIDSize]byte
}

type pendingBind struct {
	bindRequest
	at time.Time
}

type routeKey struct {
	client netip.AddrPort
	number uint16
}

// tuple is an allocation's 5-tuple without its protocol: pion/turn keys
// every allocation as UDP, so natlab drops both transports' routes.
type tuple struct{ client, server netip.AddrPort }

// fastRoute is one channel pion bound.
type fastRoute struct {
	owner   *fastPath
	key     routeKey
	tup     tuple
	peer    netip.AddrPort
	client  *net.UDPAddr // key.client, for sendmmsg
	peerUDP *net.UDPAddr // peer, for sendmmsg
	relay   *trackedPacketConn
	expires atomic.Int64 // unix nanoseconds
}

func (r *fastRoute) live(now int64) bool { return now < r.expires.Load() }

// fastPath is the fast path of one client transport: a UDP socket's
// demultiplexer or one TCP/TLS stream.
type fastPath struct {
	t      *turnRelay
	local  netip.AddrPort // the server side of the 5-tuple, as pion sees it
	udp    net.PacketConn // UDP clients: the server's socket
	batch  batchConn      // the same, for sendmmsg (kernel sockets)
	stream *guardConn     // stream clients
	routes sync.Map       // routeKey → *fastRoute

	mu      sync.Mutex
	pending map[pendingKey]pendingBind
}

func newFastPath(t *turnRelay, local net.Addr, udp net.PacketConn, stream *guardConn) *fastPath {
	fp := &fastPath{t: t, local: netaddr.AddrPort(local), udp: udp, stream: stream, pending: map[pendingKey]pendingBind{}}
	if uc, ok := udp.(*net.UDPConn); ok {
		fp.batch = newBatchConn(uc)
	}
	return fp
}

// bindOf returns the channel and peer of an authenticated ChannelBind
// request natlab passes to pion, or nil when it names anything but one
// peer.
func bindOf(m *stun.Message) *bindRequest {
	var peers int
	for _, a := range m.Attributes {
		if a.Type == stun.AttrXORPeerAddress {
			peers++
		}
	}
	num, err := m.Get(stun.AttrChannelNumber)
	if peers != 1 || err != nil || len(num) != 4 {
		return nil
	}
	var pa stun.XORMappedAddress
	if pa.GetFromAs(m, stun.AttrXORPeerAddress) != nil {
		return nil
	}
	ip, ok := netip.AddrFromSlice(pa.IP)
	if !ok {
		return nil
	}
	return &bindRequest{txid: m.TransactionID, number: binary.BigEndian.Uint16(num), peer: netip.AddrPortFrom(ip.Unmap(), uint16(pa.Port))}
}

// expect remembers a ChannelBind request handed to pion.
func (fp *fastPath) expect(client netip.AddrPort, b *bindRequest) {
	now := time.Now()
	fp.mu.Lock()
	defer fp.mu.Unlock()
	if len(fp.pending) >= maxPendingBinds {
		for k, p := range fp.pending {
			if now.Sub(p.at) > pendingWait {
				delete(fp.pending, k)
			}
		}
		if len(fp.pending) >= maxPendingBinds {
			return
		}
	}
	fp.pending[pendingKey{client, b.txid}] = pendingBind{bindRequest: *b, at: now}
}

// answered looks at a datagram or frame pion sends to client: a success
// answer to a pending ChannelBind installs (or refreshes) its route.
func (fp *fastPath) answered(p []byte, client netip.AddrPort) {
	if len(p) < headerSize || p[0]&0xC0 != 0 {
		return
	}
	typ := binary.BigEndian.Uint16(p[0:2])
	if stun.Method(typ&^0x0110) != stun.MethodChannelBind || typ&0x0110 == 0 {
		return
	}
	var k pendingKey
	k.client = client
	copy(k.txid[:], p[8:headerSize])
	fp.mu.Lock()
	pb, ok := fp.pending[k]
	delete(fp.pending, k)
	fp.mu.Unlock()
	if !ok || typ&0x0110 != 0x0100 || time.Since(pb.at) > pendingWait {
		return // an error answer, or one too late to date the binding by
	}
	fp.t.install(fp, client, pb)
}

// fromClient forwards ChannelData b from client on a live route, through
// out when there is one; false means pion handles it.
func (fp *fastPath) fromClient(b []byte, client netip.AddrPort, out *batchOut) bool {
	if len(b) < 4 || b[0] < 0x40 || b[0] > 0x7F {
		return false
	}
	v, ok := fp.routes.Load(routeKey{client, binary.BigEndian.Uint16(b[0:2])})
	if !ok {
		return false
	}
	r := v.(*fastRoute)
	n := int(binary.BigEndian.Uint16(b[2:4]))
	if 4+n > len(b) || !r.live(time.Now().UnixNano()) {
		return false // pion answers what is malformed or expired as it does today
	}
	if out != nil && r.relay.batch != nil {
		out.add(r.relay.batch, b[4:4+n], r.peerUDP)
	} else {
		_ = r.relay.writePeer(b[4:4+n], r.peer)
	}
	fp.t.fastRelayed.Add(1)
	return true
}

// send writes a ChannelData frame to a client.
func (fp *fastPath) send(b []byte, to netip.AddrPort) error {
	if fp.stream != nil {
		_, err := fp.stream.write(b)
		return err
	}
	if uc, ok := fp.udp.(*net.UDPConn); ok {
		_, err := uc.WriteToUDPAddrPort(b, to)
		return err
	}
	_, err := fp.udp.WriteTo(b, net.UDPAddrFromAddrPort(to))
	return err
}

// dropAll removes every route of this transport (a closed stream).
func (fp *fastPath) dropAll() {
	fp.t.mu.Lock()
	defer fp.t.mu.Unlock()
	fp.routes.Range(func(_, v any) bool {
		fp.t.dropRouteLocked(v.(*fastRoute))
		return true
	})
}

// install adds or refreshes the route of a ChannelBind pion accepted, if
// its allocation is still alive.
func (t *turnRelay) install(fp *fastPath, client netip.AddrPort, pb pendingBind) {
	tup := tuple{client, fp.local}
	exp := pb.at.Add(fastRouteLifetime).UnixNano()
	t.mu.Lock()
	defer t.mu.Unlock()
	relay := t.tuples[tup]
	if relay == nil || t.closed {
		return
	}
	key := routeKey{client, pb.number}
	if v, ok := fp.routes.Load(key); ok {
		old := v.(*fastRoute)
		if old.peer == pb.peer && old.relay == relay {
			if exp > old.expires.Load() {
				old.expires.Store(exp)
			}
			return
		}
		t.dropRouteLocked(old)
	}
	r := &fastRoute{owner: fp, key: key, tup: tup, peer: pb.peer, relay: relay,
		client: net.UDPAddrFromAddrPort(client), peerUDP: net.UDPAddrFromAddrPort(pb.peer)}
	r.expires.Store(exp)
	if v, ok := relay.peers.Load(pb.peer); ok {
		t.dropRouteLocked(v.(*fastRoute))
	}
	fp.routes.Store(key, r)
	relay.peers.Store(pb.peer, r)
	relay.routed.Store(true)
	t.routes[tup] = append(t.routes[tup], r)
}

// dropRouteLocked removes r from every table; t.mu is held.
func (t *turnRelay) dropRouteLocked(r *fastRoute) {
	r.expires.Store(0)
	r.owner.routes.CompareAndDelete(r.key, r)
	r.relay.peers.CompareAndDelete(r.peer, r)
	rs := t.routes[r.tup]
	for i, x := range rs {
		if x == r {
			rs = append(rs[:i], rs[i+1:]...)
			break
		}
	}
	if len(rs) == 0 {
		delete(t.routes, r.tup)
	} else {
		t.routes[r.tup] = rs
	}
}

// dropTupleLocked removes an allocation's routes; t.mu is held.
func (t *turnRelay) dropTupleLocked(tup tuple) {
	for _, r := range append([]*fastRoute(nil), t.routes[tup]...) {
		t.dropRouteLocked(r)
	}
	delete(t.tuples, tup)
}

// writePeer sends a client's payload from the relay socket.
func (c *trackedPacketConn) writePeer(b []byte, to netip.AddrPort) error {
	if uc, ok := c.PacketConn.(*net.UDPConn); ok {
		_, err := uc.WriteToUDPAddrPort(b, to)
		return err
	}
	_, err := c.PacketConn.WriteTo(b, net.UDPAddrFromAddrPort(to))
	return err
}

// toClient forwards a datagram from a peer on a live route as ChannelData
// (padded to 4 bytes, as pion does); buf holds the payload at buf[4:4+n]
// and has room for the padding. Frames for UDP clients join out when
// there is one. False means pion handles it.
func (c *trackedPacketConn) toClient(buf []byte, n int, from netip.AddrPort, out *batchOut) bool {
	v, ok := c.peers.Load(from)
	if !ok {
		return false
	}
	r := v.(*fastRoute)
	if !r.live(time.Now().UnixNano()) {
		return false
	}
	binary.BigEndian.PutUint16(buf[0:2], r.key.number)
	binary.BigEndian.PutUint16(buf[2:4], uint16(n)) //nolint:gosec // n fits: a UDP payload
	end := 4 + n
	for end%4 != 0 {
		buf[end] = 0
		end++
	}
	if out != nil && r.owner.batch != nil {
		out.add(r.owner.batch, buf[:end], r.client)
	} else {
		_ = r.owner.send(buf[:end], r.key.client)
	}
	c.t.fastRelayed.Add(1)
	return true
}
