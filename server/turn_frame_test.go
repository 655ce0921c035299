package server

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"

	"github.com/pion/stun/v3"
	"github.com/pion/turn/v4"
)

// chunkConn is a net.Conn whose Read returns the given chunks one by one,
// then io.EOF: what pion/turn's STUNConn reads from a guardConn.
type chunkConn struct {
	net.Conn
	chunks [][]byte
}

func (c *chunkConn) Read(p []byte) (int, error) {
	if len(c.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.chunks[0])
	if c.chunks[0] = c.chunks[0][n:]; len(c.chunks[0]) == 0 {
		c.chunks = c.chunks[1:]
	}
	return n, nil
}

func (c *chunkConn) RemoteAddr() net.Addr { return &net.TCPAddr{} }

// natlabFrames frames a stream as guardConn does and returns the frames
// that would reach pion/turn, stopping at the first error.
func natlabFrames(stream []byte) [][]byte {
	fr := newFrameReader(bytes.NewReader(stream), nil)
	fr.grow(streamBufferRelay)
	var out [][]byte
	for {
		f, err := fr.next()
		if err != nil {
			return out
		}
		if f != nil {
			out = append(out, append([]byte(nil), f...))
		}
	}
}

// pionFrames reads frames with pion/turn's own stream framing, as its
// server read loop does (1,600-byte reads).
func pionFrames(chunks [][]byte, want int) ([][]byte, error) {
	sc := turn.NewSTUNConn(&chunkConn{chunks: chunks})
	var out [][]byte
	buf := make([]byte, 1600)
	for len(out) < want {
		n, _, err := sc.ReadFrom(buf)
		if err != nil {
			return out, err
		}
		if n == 0 {
			return out, errors.New("pion read a 0-byte frame (it would spin)")
		}
		out = append(out, append([]byte(nil), buf[:n]...))
	}
	return out, nil
}

// sentinel ends every fuzzed stream, so that pion/turn, which waits for 9
// bytes before it frames anything, reads the last frame under test.
var sentinel = stun.MustBuild(stun.NewTransactionIDSetter([12]byte{1}), stun.NewType(stun.MethodSend, stun.ClassIndication)).Raw

// FuzzStreamFraming checks natlab's TURN stream framing against
// pion/turn's: every frame natlab passes on must be read by pion as the
// same frame, whether pion gets one frame per read (as from guardConn)
// or the whole stream at once.
func FuzzStreamFraming(f *testing.F) {
	cd := func(ch, n int, fill byte) []byte {
		b := make([]byte, 4+(n+3)&^3)
		binary.BigEndian.PutUint16(b, uint16(ch))
		binary.BigEndian.PutUint16(b[2:], uint16(n))
		for i := 4; i < len(b); i++ {
			b[i] = fill
		}
		return b
	}
	alloc := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest)).Raw
	f.Add(alloc)
	f.Add(append(cd(0x4000, 0, 0), alloc...))
	f.Add(append(cd(0x4001, 3, 7), cd(0x7FFF, 100, 1)...))
	f.Add(cd(0x4000, 0xFFFF, 0))
	f.Add([]byte{0x00, 0x03, 0xFF, 0xEC, 0x21, 0x12, 0xA4, 0x42})
	f.Add([]byte{0x40, 0x00, 0x00, 0x04, 0x21, 0x12, 0xA4, 0x42})
	f.Add(append(cd(0x4000, 0, 0), 0x21, 0x12, 0xA4, 0x42, 0, 0, 0, 0))
	f.Fuzz(func(t *testing.T, stream []byte) {
		frames := natlabFrames(stream)
		if len(frames) == 0 {
			return
		}
		withEnd := append(frames, sentinel)
		whole := bytes.Join(withEnd, nil)
		for name, chunks := range map[string][][]byte{"per frame": withEnd, "whole": {whole}} {
			got, err := pionFrames(append([][]byte(nil), chunks...), len(frames))
			if err != nil {
				t.Fatalf("%s: pion stopped after %d of %d frames: %v", name, len(got), len(frames), err)
			}
			for i := range frames {
				if !bytes.Equal(got[i], frames[i]) {
					t.Fatalf("%s: frame %d read two ways: natlab %x, pion %x", name, i, frames[i], got[i])
				}
			}
		}
	})
}

// The framing limits, one case each.
func TestFrameSize(t *testing.T) {
	for _, tc := range []struct {
		hdr  []byte
		size int
		err  error
	}{
		{[]byte{0x40, 0x00, 0x00, 0x00}, 4, nil},
		{[]byte{0x40, 0x00, 0x00, 0x05}, 12, nil},
		{[]byte{0x7F, 0xFF, 0x05, 0xDC}, 1504, nil},
		{[]byte{0x40, 0x00, 0xFF, 0xFF}, 0, errFrameTooLarge},
		{[]byte{0x40, 0x00, 0xFF, 0xFC}, 0, errFrameTooLarge},
		{[]byte{0x00, 0x01, 0x00, 0x08}, 28, nil},
		{[]byte{0x00, 0x03, 0xFF, 0xEC}, 0, errFrameTooLarge},
		{[]byte{0x00, 0x03, 0x00, 0x06}, 0, errBadFrame},
		{[]byte{0x80, 0x00, 0x00, 0x00}, 0, errBadFrame},
		{[]byte{0x21, 0x12, 0xA4, 0x42}, 0, errAmbiguousFrame},
	} {
		size, err := frameSize(tc.hdr)
		if size != tc.size || !errors.Is(err, tc.err) {
			t.Errorf("frameSize(%x) = %d, %v; want %d, %v", tc.hdr, size, err, tc.size, tc.err)
		}
	}
}
