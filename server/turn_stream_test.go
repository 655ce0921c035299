package server_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"github.com/natlab/natlab/internal/leakcheck"
	"github.com/natlab/natlab/server"
)

// turnStream is a hand-written TURN-over-TCP client: the tests below
// need to put exact bytes on the stream, which no client library does.
type turnStream struct {
	t     *testing.T
	c     net.Conn
	nonce stun.Nonce
	key   stun.MessageIntegrity
}

func dialTURNStream(t *testing.T, srv *server.Server) *turnStream {
	t.Helper()
	c, err := net.DialTimeout("tcp4", srv.Addrs().Primary.String(), turnTestTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &turnStream{t: t, c: c}
}

func (s *turnStream) send(b []byte) {
	s.t.Helper()
	_ = s.c.SetWriteDeadline(time.Now().Add(turnTestTimeout))
	if _, err := s.c.Write(b); err != nil {
		s.t.Fatalf("write: %v", err)
	}
}

// read returns the next STUN message the server sends.
func (s *turnStream) read() *stun.Message {
	s.t.Helper()
	_ = s.c.SetReadDeadline(time.Now().Add(turnTestTimeout))
	hdr := make([]byte, 20)
	if _, err := io.ReadFull(s.c, hdr); err != nil {
		s.t.Fatalf("read: %v", err)
	}
	body := make([]byte, binary.BigEndian.Uint16(hdr[2:4]))
	if _, err := io.ReadFull(s.c, body); err != nil {
		s.t.Fatalf("read: %v", err)
	}
	m := &stun.Message{Raw: append(hdr, body...)}
	if err := m.Decode(); err != nil {
		s.t.Fatal(err)
	}
	return m
}

// request sends a signed request (after learning the nonce with an
// unsigned Allocate) and returns the answer.
func (s *turnStream) request(method stun.Method, attrs ...stun.Setter) *stun.Message {
	s.t.Helper()
	if s.key == nil {
		s.send(stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest),
			turnTransportUDP).Raw)
		res := s.read()
		if err := s.nonce.GetFrom(res); err != nil {
			s.t.Fatalf("no nonce in %v", res)
		}
		s.key = stun.NewLongTermIntegrity(user, server.DefaultRealm, pass)
	}
	setters := append([]stun.Setter{stun.TransactionID, stun.NewType(method, stun.ClassRequest)}, attrs...)
	setters = append(setters, stun.NewUsername(user), stun.NewRealm(server.DefaultRealm), s.nonce, s.key, stun.Fingerprint)
	s.send(stun.MustBuild(setters...).Raw)
	return s.read()
}

var turnTransportUDP = stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}}

// closed waits for the server to close the stream; what it sends before
// (answers to earlier frames) is skipped.
func (s *turnStream) closed() error {
	_ = s.c.SetReadDeadline(time.Now().Add(turnTestTimeout))
	_, err := io.Copy(io.Discard, s.c)
	if err == nil || errors.Is(err, net.ErrClosed) || isReset(err) {
		return nil
	}
	return err
}

func isReset(err error) bool {
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

type peerAttr struct{ stun.XORMappedAddress }

func (p peerAttr) AddTo(m *stun.Message) error { return p.AddToAs(m, stun.AttrXORPeerAddress) }

// Vulnerability 1 of issue 11: a ChannelData frame whose length field is
// 0xFFFF was framed as 65,540 bytes by natlab and as 4 by pion/turn, so
// a Send indication hidden in its payload reached pion uninspected and
// relayed to the server's own STUN port. The frame is larger than any
// datagram: the server must close the stream, and nothing may be relayed.
func TestTURNStreamSmuggledSendRefused(t *testing.T) {
	leakcheck.Check(t)
	srv := startTURN(t, nil)
	s := dialTURNStream(t, srv)
	if res := s.request(stun.MethodAllocate, turnTransportUDP); res.Type.Class != stun.ClassSuccessResponse {
		t.Fatalf("allocate: %v", res)
	}
	self := srv.Addrs().Primary
	// 127.0.0.1 is the server's own address: the permission is granted
	// (relay-to-relay), data to its STUN port is not.
	perm := peerAttr{stun.XORMappedAddress{IP: self.Addr().AsSlice(), Port: 1}}
	if res := s.request(stun.MethodCreatePermission, perm); res.Type.Class != stun.ClassSuccessResponse {
		t.Fatalf("permission: %v", res)
	}
	bind := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	send := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodSend, stun.ClassIndication),
		peerAttr{stun.XORMappedAddress{IP: self.Addr().AsSlice(), Port: int(self.Port())}},
		stun.RawAttribute{Type: stun.AttrData, Value: bind.Raw})
	frame := make([]byte, 4+0x10000)
	binary.BigEndian.PutUint16(frame[0:2], 0x4000)
	binary.BigEndian.PutUint16(frame[2:4], 0xFFFF)
	copy(frame[4:], send.Raw)
	before := srv.Stats().Requests
	s.send(frame)
	if err := s.closed(); err != nil {
		t.Errorf("the server kept a stream with a %d-byte frame open: %v", len(frame), err)
	}
	time.Sleep(silence) // a relayed Binding takes well under a millisecond
	if got := srv.Stats().Requests - before; got != 0 {
		t.Errorf("a smuggled Send indication reached the server's STUN port (%d requests)", got)
	}
}

// Vulnerability 2 of issue 11: after one unauthenticated Allocate, a STUN
// frame of length 0xFFEC made pion/turn's stream framing compute a
// 0-byte frame and loop without reading, a core per connection, forever.
// The server must close the stream (and leakcheck sees no spinning
// goroutine left), and Binding must still be answered.
func TestTURNStreamOverflowLengthCloses(t *testing.T) {
	leakcheck.Check(t)
	srv := startTURN(t, nil)
	s := dialTURNStream(t, srv)
	s.send(stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), turnTransportUDP).Raw)
	if res := s.read(); res.Type.Class != stun.ClassErrorResponse {
		t.Fatalf("unauthenticated allocate: %v", res)
	}
	frame := make([]byte, 20+0xFFEC)
	binary.BigEndian.PutUint16(frame[0:2], 0x0003)
	binary.BigEndian.PutUint16(frame[2:4], 0xFFEC)
	binary.BigEndian.PutUint32(frame[4:8], 0x2112A442)
	s.send(frame)
	if err := s.closed(); err != nil {
		t.Errorf("the server kept the stream open: %v", err)
	}
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if res := exchange(t, c, srv.Addrs().Primary, stun.MustBuild(stun.TransactionID, stun.BindingRequest)); res.Type != stun.BindingSuccess {
		t.Errorf("binding: %v", res)
	}
}

// A frame pion/turn would read as STUN (the magic cookie where a
// ChannelData payload starts) is refused: pion must never frame a stream
// differently from natlab.
func TestTURNStreamAmbiguousFrameCloses(t *testing.T) {
	leakcheck.Check(t)
	srv := startTURN(t, nil)
	s := dialTURNStream(t, srv)
	s.send(stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), turnTransportUDP).Raw)
	_ = s.read()
	cd := []byte{0x40, 0x00, 0x00, 0x10, 0x21, 0x12, 0xA4, 0x42}
	cd = append(cd, bytes.Repeat([]byte{0}, 12)...)
	s.send(cd)
	if err := s.closed(); err != nil {
		t.Errorf("the server kept the stream open: %v", err)
	}
}
