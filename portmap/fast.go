package portmap

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/natlab/natlab/natclass"
)

// Bounds of the wait for a silent gateway, each with why.
const (
	// silentRTTs is how many of the gateway's round trips a protocol may
	// stay silent before it counts as not offered: the gateway is one hop
	// away, and a port-mapping daemon answers from user space within a
	// few RTTs even on a slow router.
	silentRTTs = 10
	// minSilentWait is the floor of that wait: on a LAN the RTT is below
	// the scheduler's jitter and a router's slow path.
	minSilentWait = 150 * time.Millisecond
	// resendRTTs spaces retransmissions once the gateway's RTT is known,
	// so that a lost datagram is resent within the silent wait.
	resendRTTs = 3
	// minResend is the floor of that spacing.
	minResend = 40 * time.Millisecond
	// pollStep is how often a waiting exchange looks whether the RTT has
	// become known (it is measured beside the first request).
	pollStep = 20 * time.Millisecond
)

// errRefused is wrapped when the gateway answered ICMP port unreachable:
// nothing listens there, so the protocol is not offered.
var errRefused = errors.New("not offered (port unreachable)")

// isRefused reports whether err is the kernel's report of an ICMP port
// unreachable on a connected socket.
func isRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }

// boundSilence measures the gateway's RTT with one TTL-1 datagram toward
// c.beyond (the gateway answers Time Exceeded) and, once known, cancels
// ctx with a cause silentRTTs round trips (at least minSilentWait) after
// start: a gateway that has not answered by then will not. Without a
// measurement (no address beyond, not Linux, an ICMP-silent gateway) the
// caller's own timeout stays the bound. The returned stop ends the
// measurement and the timer.
func (c *Client) boundSilence(ctx context.Context, cancel context.CancelCauseFunc, start time.Time) (stop func()) {
	if !c.beyond.IsValid() {
		return func() {}
	}
	hctx, hcancel := context.WithCancel(ctx)
	var (
		mu    sync.Mutex
		timer *time.Timer
		wg    sync.WaitGroup
	)
	wg.Go(func() {
		hop, rtt, err := natclass.FirstHop(hctx, c.net, c.beyond)
		if err != nil || hop != c.gw {
			c.log.Debug("gateway rtt not measured", "hop", hop, "err", err)
			return
		}
		c.gwRTT.Store(int64(rtt))
		wait := max(silentRTTs*rtt, minSilentWait)
		cause := fmt.Errorf("within %v (%d round trips to the gateway, %v each)", wait.Round(time.Millisecond), silentRTTs, rtt.Round(time.Microsecond))
		mu.Lock()
		timer = time.AfterFunc(time.Until(start.Add(wait)), func() { cancel(cause) })
		mu.Unlock()
	})
	return func() {
		hcancel()
		wg.Wait()
		mu.Lock()
		if timer != nil {
			timer.Stop()
		}
		mu.Unlock()
	}
}

// resender spaces one request's transmissions: base, doubling, or
// resendRTTs of the gateway's RTT once that is known.
type resender struct {
	c    *Client
	base time.Duration
	sent int
	last time.Time
}

func (c *Client) resender(base time.Duration) *resender { return &resender{c: c, base: base} }

func (r *resender) interval() time.Duration {
	first := r.base
	if rtt := time.Duration(r.c.gwRTT.Load()); rtt > 0 {
		first = min(first, max(resendRTTs*rtt, minResend))
	}
	return first << min(max(r.sent-1, 0), 6)
}

// due reports whether to transmit now, and counts the transmission.
func (r *resender) due() bool {
	if r.sent > 0 && time.Since(r.last) < r.interval() {
		return false
	}
	r.sent++
	r.last = time.Now()
	return true
}

// next is the read deadline: the next transmission, or sooner while the
// RTT that may shorten the spacing is not known yet.
func (r *resender) next() time.Time {
	at := r.last.Add(r.interval())
	if poll := time.Now().Add(pollStep); r.c.gwRTT.Load() == 0 && poll.Before(at) {
		at = poll
	}
	return at
}
