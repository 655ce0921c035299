package portmap

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/pion/transport/v4"

	"github.com/natlab/natlab/internal/stuntx"
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

// boundSilence bounds the wait for a silent gateway by its round trip:
// once known, ctx is cancelled with a cause silentRTTs round trips (at
// least minSilentWait) after start, as a gateway that has not answered by
// then will not. Two measurements race: a TTL-1 datagram toward c.beyond,
// which the gateway answers Time Exceeded (its own RTT, Linux only), and a
// STUN Binding request to c.beyond (the server beyond the gateway), whose
// RTT bounds the gateway's from above and needs no ICMP, which routers
// rate-limit. Without either (no address beyond, nothing answers) the
// caller's own timeout stays the bound. The returned stop ends the
// measurements and the timer.
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
	set := func(rtt time.Duration, what string) {
		mu.Lock()
		defer mu.Unlock()
		if timer != nil {
			return // the other measurement came first
		}
		c.gwRTT.Store(int64(rtt))
		wait := max(silentRTTs*rtt, minSilentWait)
		cause := fmt.Errorf("within %v (%d round trips to the %s, %v each)", wait.Round(time.Millisecond), silentRTTs, what, rtt.Round(time.Microsecond))
		timer = time.AfterFunc(time.Until(start.Add(wait)), func() { cancel(cause) })
	}
	wg.Go(func() {
		hop, rtt, err := natclass.FirstHop(hctx, c.net, c.beyond)
		if err != nil || hop != c.gw {
			c.log.Debug("gateway rtt not measured", "hop", hop, "err", err)
			return
		}
		set(rtt, "gateway")
	})
	wg.Go(func() {
		rtt, err := stunRTT(hctx, c.net, c.beyond)
		if err != nil {
			c.log.Debug("server rtt not measured", "err", err)
			return
		}
		set(rtt, "server beyond the gateway")
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

// stunRTTBound bounds stunRTT when ctx has no deadline: a server that
// answers at all does within a few seconds.
const stunRTTBound = 3 * time.Second

// stunRTT is the round trip of a STUN Binding request to server, sent
// again at 100, 300 and 700 ms; the time counts from the first send, so a
// lost request only lengthens the bound. Any answer counts, even an error.
func stunRTT(ctx context.Context, n transport.Net, server netip.AddrPort) (time.Duration, error) {
	conn, err := n.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	req, err := stuntx.Request()
	if err != nil {
		return 0, err
	}
	bound := stunRTTBound
	if dl, ok := ctx.Deadline(); ok {
		bound = max(time.Until(dl), time.Millisecond)
	}
	a, err := stuntx.Datagram(ctx, conn, server, req, stuntx.Backoff(100*time.Millisecond, bound))
	var se *stuntx.ServerError
	if err != nil && !errors.As(err, &se) {
		return 0, err
	}
	return a.RTT, nil
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
