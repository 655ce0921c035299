//go:build linux

package testnet

import (
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// This kernel has no sch_netem, so a link with delay is not a veth pair
// but two TUN devices, one in each namespace, joined by a userspace delay
// line in this process: every IP packet read from one end is written to
// the other after the link's one-way delay.

// wireQueue bounds the packets in flight on one direction of a delayedPacket
// link; beyond it packets are dropped, like a router's full buffer.
const wireQueue = 4096

// wireMaxPacket is the largest packet a TUN read can return (an IPv4
// datagram's maximum), so no packet is ever truncated.
const wireMaxPacket = 65535

// delayLine is a delayedPacket point-to-point link between two namespaces.
type delayLine struct {
	delay time.Duration
	a, b  *os.File
	done  chan struct{}
	wg    sync.WaitGroup
	once  sync.Once
}

// openTUN creates the TUN device name inside namespace ns. The device lives
// as long as the returned file is open.
func openTUN(ns, name string) (*os.File, error) {
	return inNS(ns, func() (*os.File, error) {
		// Non-blocking, so the Go poller serves reads and Close unblocks them.
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return nil, fmt.Errorf("open /dev/net/tun: %w", err)
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("tun %s: %w", name, err)
		}
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("create tun %s in %s: %w", name, ns, err)
		}
		return os.NewFile(uintptr(fd), "tun:"+ns+":"+name), nil
	})
}

// newDelayLine creates TUN devices ifA in nsA and ifB in nsB and starts
// forwarding between them with the given one-way delay.
func newDelayLine(nsA, ifA, nsB, ifB string, delay time.Duration) (*delayLine, error) {
	a, err := openTUN(nsA, ifA)
	if err != nil {
		return nil, err
	}
	b, err := openTUN(nsB, ifB)
	if err != nil {
		a.Close()
		return nil, err
	}
	w := &delayLine{delay: delay, a: a, b: b, done: make(chan struct{})}
	w.start(a, b)
	w.start(b, a)
	return w, nil
}

type delayedPacket struct {
	due time.Time
	pkt []byte
}

// start forwards src → dst: a reader stamps each packet with its due time
// and a writer releases them in order. One delay for all packets keeps
// them in order, as on a real link.
func (w *delayLine) start(src, dst *os.File) {
	q := make(chan delayedPacket, wireQueue)
	w.wg.Add(2)
	go func() {
		defer w.wg.Done()
		defer close(q)
		buf := make([]byte, wireMaxPacket)
		for {
			n, err := src.Read(buf)
			if err != nil {
				return // closed
			}
			p := delayedPacket{due: time.Now().Add(w.delay), pkt: append([]byte(nil), buf[:n]...)}
			select {
			case q <- p:
			default: // queue full: drop
			}
		}
	}()
	go func() {
		defer w.wg.Done()
		t := time.NewTimer(0)
		defer t.Stop()
		for p := range q {
			if d := time.Until(p.due); d > 0 {
				t.Reset(d)
				select {
				case <-t.C:
				case <-w.done:
					return
				}
			}
			// A failed write is a lost packet, as on a delayLine.
			_, _ = dst.Write(p.pkt)
		}
	}()
}

// Close stops the link and removes both TUN devices. It is idempotent.
func (w *delayLine) Close() error {
	var err error
	w.once.Do(func() {
		close(w.done)
		err = w.a.Close()
		if e := w.b.Close(); err == nil {
			err = e
		}
		w.wg.Wait()
	})
	return err
}
