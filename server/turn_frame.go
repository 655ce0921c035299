package server

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// TURN over TCP and TLS is a stream of frames (RFC 5766 §11.5, RFC 6062):
// STUN messages, and ChannelData messages padded to a multiple of four
// bytes. natlab frames the stream itself and hands pion/turn exactly one
// frame per Read, and only frames that pion/turn's own framing
// (turn.STUNConn) reads the same way, so the frame natlab inspected is the
// frame pion acts on: no payload can hide a second message.

// Stream frame limits, each with why.
const (
	// maxStreamFrame is the largest frame, header and padding included,
	// that the same message could be as a UDP datagram (65,535 bytes less
	// the IPv4 and UDP headers). A longer frame is no TURN message: the
	// stream is closed. It also keeps every length below 65,536, where
	// pion/turn's 16-bit frame arithmetic wraps around.
	maxStreamFrame = 65535 - 20 - 8
	// maxRelayFrame is the largest frame handed to pion/turn, whose read
	// loop drops messages of its 1,600-byte inbound MTU or more; natlab
	// drops them here instead (reading past them keeps the framing).
	maxRelayFrame = 1600 - 1
	// streamBufferPreAuth is the read buffer of a stream that has not
	// authenticated yet: room for one relayable frame, so an idle
	// unauthenticated connection costs a few KiB.
	streamBufferPreAuth = 2 << 10
	// streamBufferRelay is the read buffer once authenticated: a relayed
	// stream is many small frames, read a few dozen per system call.
	streamBufferRelay = 32 << 10
)

var (
	errBadFrame       = errors.New("turn stream: neither STUN nor ChannelData")
	errFrameTooLarge  = fmt.Errorf("turn stream: frame larger than a datagram (%d bytes)", maxStreamFrame)
	errAmbiguousFrame = errors.New("turn stream: ChannelData that reads as STUN")
)

// frameReader reads frames off a stream through its own buffer, which
// can grow once the stream has authenticated.
type frameReader struct {
	r        io.Reader
	buf      []byte
	off, end int
}

func newFrameReader(r io.Reader, prefix []byte) *frameReader {
	f := &frameReader{r: r, buf: make([]byte, max(streamBufferPreAuth, len(prefix)))}
	f.end = copy(f.buf, prefix)
	return f
}

// grow enlarges the buffer to n bytes.
func (f *frameReader) grow(n int) {
	if n <= len(f.buf) {
		return
	}
	b := make([]byte, n)
	f.end = copy(b, f.buf[f.off:f.end])
	f.off, f.buf = 0, b
}

// fill makes at least n bytes (n <= len(f.buf)) available.
func (f *frameReader) fill(n int) error {
	if f.end-f.off >= n {
		return nil
	}
	if f.off+n > len(f.buf) {
		f.end = copy(f.buf, f.buf[f.off:f.end])
		f.off = 0
	}
	for f.end-f.off < n {
		k, err := f.r.Read(f.buf[f.end:])
		f.end += k
		if f.end-f.off >= n {
			return nil
		}
		if err != nil {
			if errors.Is(err, io.EOF) && f.end > f.off {
				return io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// discard skips n bytes.
func (f *frameReader) discard(n int) error {
	for n > 0 {
		if f.end == f.off {
			f.off, f.end = 0, 0
			if err := f.fill(1); err != nil {
				return err
			}
		}
		k := min(n, f.end-f.off)
		f.off += k
		n -= k
	}
	return nil
}

// next returns the next frame, valid until the following call. A frame
// too large to relay is skipped and returned as nil with a nil error; a
// frame that is no TURN message, or that pion/turn could read another
// way, is an error, and the stream cannot be resynchronised after it.
func (f *frameReader) next() ([]byte, error) {
	if err := f.fill(4); err != nil {
		return nil, err
	}
	hdr := f.buf[f.off : f.off+4]
	size, err := frameSize(hdr)
	if err != nil {
		return nil, err
	}
	if size > maxRelayFrame {
		return nil, f.discard(size)
	}
	if err := f.fill(size); err != nil {
		return nil, err
	}
	frame := f.buf[f.off : f.off+size]
	if err := checkFrame(frame); err != nil {
		return nil, err
	}
	f.off += size
	return frame, nil
}

// ready reports whether the next frame is already buffered whole, so
// next returns it without reading or moving the buffer: frames returned
// before stay valid.
func (f *frameReader) ready() bool {
	if f.end-f.off < 4 {
		return false
	}
	size, err := frameSize(f.buf[f.off : f.off+4])
	return err == nil && size <= f.end-f.off
}

// frameSize is the length of the frame whose first four bytes are hdr.
func frameSize(hdr []byte) (int, error) {
	n := int(binary.BigEndian.Uint16(hdr[2:4]))
	var size int
	switch {
	case binary.BigEndian.Uint32(hdr) == magicCookie:
		// After a 4-byte ChannelData, pion/turn would see these bytes
		// where a STUN header has its cookie.
		return 0, errAmbiguousFrame
	case hdr[0] >= 0x40 && hdr[0] <= 0x7F: // channel numbers 0x4000–0x7FFF
		size = 4 + (n+3)&^3
	case hdr[0]&0xC0 == 0:
		if n%4 != 0 {
			return 0, errBadFrame // STUN attributes are 32-bit aligned
		}
		size = headerSize + n
	default:
		return 0, errBadFrame
	}
	if size > maxStreamFrame {
		return 0, errFrameTooLarge
	}
	return size, nil
}

// checkFrame refuses a whole frame that pion/turn would read another way:
// STUN without the magic cookie, and ChannelData whose payload starts with
// it (pion tests for STUN first).
func checkFrame(b []byte) error {
	stunLike := len(b) >= 8 && binary.BigEndian.Uint32(b[4:8]) == magicCookie
	if b[0]&0xC0 == 0 {
		if len(b) < headerSize || !stunLike {
			return errBadFrame
		}
		return nil
	}
	if stunLike {
		return errAmbiguousFrame
	}
	return nil
}
