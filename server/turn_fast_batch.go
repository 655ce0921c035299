package server

import (
	"net"
	"net/netip"

	"golang.org/x/net/ipv4"
)

// relayBatch is how many datagrams a relay socket's reader takes per
// system call once the socket carries a fast-path channel: under load a
// peer's datagrams queue up, and one recvmmsg and one sendmmsg then carry
// a whole burst to the client.
const relayBatch = 16

// relayReader reads a relay socket in batches; each buffer has room for
// a ChannelData header before the payload and padding after it, so a
// datagram becomes its frame in place.
type relayReader struct {
	pc       batchConn
	msgs     []ipv4.Message
	bufs     [][]byte
	max      int // payload bound: pion's read buffer, as before
	n, index int
	out      *batchOut
}

func newRelayReader(uc *net.UDPConn, max int) *relayReader {
	r := &relayReader{pc: newBatchConn(uc), msgs: make([]ipv4.Message, relayBatch), bufs: make([][]byte, relayBatch), max: max,
		out: newBatchOut(relayBatch)}
	for i := range r.msgs {
		r.bufs[i] = make([]byte, 4+max+3)
		r.msgs[i].Buffers = [][]byte{r.bufs[i][4 : 4+max]}
	}
	return r
}

// next forwards what it can on the fast path and returns the next
// datagram for pion, valid until the following call.
func (r *relayReader) next(c *trackedPacketConn) ([]byte, netip.AddrPort, error) {
	for {
		for r.index < r.n {
			i := r.index
			r.index++
			ua, ok := r.msgs[i].Addr.(*net.UDPAddr)
			if !ok {
				continue
			}
			ap := ua.AddrPort()
			ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
			if c.toClient(r.bufs[i], r.msgs[i].N, ap, r.out) {
				continue
			}
			r.out.flush()
			return r.bufs[i][4 : 4+r.msgs[i].N], ap, nil
		}
		r.out.flush()
		n, err := r.pc.ReadBatch(r.msgs, 0)
		if err != nil {
			return nil, netip.AddrPort{}, err
		}
		r.n, r.index = n, 0
	}
}

// batchOut collects datagrams for one socket, to send them with one
// sendmmsg: ChannelData frames for the UDP clients of a server socket,
// or a client read batch's payloads for a relay socket. A datagram for
// another socket sends what was collected first.
type batchOut struct {
	to   batchConn
	msgs []ipv4.Message
	n    int
}

func newBatchOut(size int) *batchOut {
	o := &batchOut{msgs: make([]ipv4.Message, size)}
	for i := range o.msgs {
		o.msgs[i].Buffers = make([][]byte, 1)
	}
	return o
}

func (o *batchOut) add(to batchConn, b []byte, addr *net.UDPAddr) {
	if o.to != to || o.n == len(o.msgs) {
		o.flush()
		o.to = to
	}
	o.msgs[o.n].Buffers[0] = b
	o.msgs[o.n].Addr = addr
	o.n++
}

// flush sends the collected datagrams; one the kernel refuses is lost,
// as pion's WriteTo errors are.
func (o *batchOut) flush() {
	for sent := 0; sent < o.n; {
		k, err := o.to.WriteBatch(o.msgs[sent:o.n], 0)
		if err != nil || k == 0 {
			break
		}
		sent += k
	}
	o.n = 0
}
