package testnet

import (
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"
)

// packet is one UDP datagram in flight through the in-process lab. The
// payload is copied once when the sender writes it and never mutated after.
type packet struct {
	src, dst netip.AddrPort
	payload  []byte
}

// pipe is one direction of a shaped link. It drops packets with the link's
// loss probability and delivers the rest to next after the link's one-way
// delay, in the order they were sent. A link without delay delivers in the
// sender's goroutine; a delayed one owns a single goroutine that releases
// packets from a FIFO as their time comes, so senders never sleep and no
// goroutine is started per packet.
type pipe struct {
	delay time.Duration
	loss  float64
	next  func(packet)

	mu     sync.Mutex
	rng    *rand.Rand // seeded, so a lab's losses repeat from run to run
	queue  []timedPacket
	closed bool
	wake   chan struct{} // capacity 1: "the queue went from empty to not empty"
	done   chan struct{}
	exited chan struct{}

	// dropped counts packets lost on this pipe (loss or closed lab).
	dropped uint64
}

type timedPacket struct {
	due time.Time
	p   packet
}

func newPipe(l Link, seed uint64, next func(packet)) *pipe {
	p := &pipe{
		delay: l.Delay,
		loss:  l.Loss,
		next:  next,
		rng:   rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
	}
	if p.delay > 0 {
		p.wake = make(chan struct{}, 1)
		p.done = make(chan struct{})
		p.exited = make(chan struct{})
		go p.run()
	}
	return p
}

// send puts p on the link.
func (l *pipe) send(p packet) {
	l.mu.Lock()
	if l.closed || (l.loss > 0 && l.rng.Float64() < l.loss) {
		l.dropped++
		l.mu.Unlock()
		return
	}
	if l.delay <= 0 {
		l.mu.Unlock()
		l.next(p)
		return
	}
	l.queue = append(l.queue, timedPacket{due: time.Now().Add(l.delay), p: p})
	first := len(l.queue) == 1
	l.mu.Unlock()
	if first {
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
}

// run releases queued packets when they are due. The delay is constant per
// pipe, so the FIFO is also in due order and only its head needs a timer.
func (l *pipe) run() {
	defer close(l.exited)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		l.mu.Lock()
		if len(l.queue) == 0 {
			l.mu.Unlock()
			select {
			case <-l.wake:
				continue
			case <-l.done:
				return
			}
		}
		head := l.queue[0]
		l.mu.Unlock()
		if d := time.Until(head.due); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-l.done:
				return
			}
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			return
		}
		l.queue[0] = timedPacket{}
		l.queue = l.queue[1:]
		if len(l.queue) == 0 {
			l.queue = nil // let the backing array go after a burst
		}
		l.mu.Unlock()
		l.next(head.p)
	}
}

// close drops whatever is in flight and waits for the pipe's goroutine.
func (l *pipe) close() {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	l.dropped += uint64(len(l.queue))
	l.queue = nil
	l.mu.Unlock()
	if l.done != nil {
		close(l.done)
		<-l.exited
	}
}
