package natclass

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/natlab/natlab/internal/stuntx"
)

// lifetime measures how long an idle mapping survives (RFC 5780 §4.6, with
// RESPONSE-PORT): socket X makes a mapping and goes quiet; after t, socket
// Y asks the server to answer to X's mapped port. X hearing it means the
// mapping was alive at t. Bisection between 0 and LifetimeMax finds the
// edge to LifetimeResolution; each step needs a fresh mapping.
func (d *discovery) lifetime(ctx context.Context, p *Profile) {
	notRun := func(reason string) {
		p.NotRun = append(p.NotRun, NotRun{Test: TestBindingLifetime, Reason: reason})
	}
	if p.MappedAddress == p.LocalAddress {
		notRun("no NAT: there is no mapping to expire")
		return
	}
	hi := d.opts.LifetimeMax
	if hi <= 0 {
		hi = DefaultLifetimeMax
	}
	res := d.opts.LifetimeResolution
	if res <= 0 {
		res = lifetimeResolution
	}
	step := 0
	alive := func(t time.Duration) (bool, error) {
		step++
		return d.aliveAfter(ctx, t, step)
	}
	// Check the method works at all before waiting on it.
	if ok, err := alive(0); err != nil || !ok {
		if err == nil {
			err = errors.New("a fresh mapping did not receive the RESPONSE-PORT answer")
		}
		notRun(err.Error())
		return
	}
	lo := time.Duration(0)
	for hi-lo > res {
		mid := lo + (hi-lo)/2
		ok, err := alive(mid)
		if err != nil {
			notRun(err.Error())
			return
		}
		if ok {
			lo = mid
		} else {
			hi = mid
		}
	}
	v := lo.Seconds()
	p.BindingLifetimeS = &v
	if hi == d.opts.LifetimeMax || (d.opts.LifetimeMax <= 0 && hi == DefaultLifetimeMax) {
		p.Hints = append(p.Hints, fmt.Sprintf("binding lifetime is at least %v (the search bound)", lo.Round(time.Second)))
	}
}

func (d *discovery) aliveAfter(ctx context.Context, t time.Duration, step int) (bool, error) {
	xn, yn := fmt.Sprintf("lifetime-x-%d", step), fmt.Sprintf("lifetime-y-%d", step)
	defer d.closeSock(xn)
	defer d.closeSock(yn)
	x, err := d.socket(xn)
	if err != nil {
		return false, err
	}
	y, err := d.socket(yn)
	if err != nil {
		return false, err
	}
	pk, _, err := x.transact(ctx, x, d.primary, rttSchedule(d.rtt))
	if err != nil {
		return false, fmt.Errorf("binding lifetime: %w", err)
	}
	mx, ok := stuntx.Mapped(pk.Msg)
	if !ok {
		return false, errors.New("binding lifetime: response without a mapped address")
	}
	if t > 0 {
		tm := time.NewTimer(t)
		select {
		case <-ctx.Done():
			tm.Stop()
			return false, ctx.Err()
		case <-tm.C:
		}
	}
	pk, _, err = y.transact(ctx, x, d.primary, rttSchedule(d.rtt), stuntx.ResponsePort(mx.Port()))
	var se *ServerError
	switch {
	case err == nil && pk.Via != x:
		return false, errors.New("server ignored RESPONSE-PORT")
	case err == nil:
		return true, nil
	case errors.Is(err, errTimeout):
		return false, nil
	case errors.As(err, &se):
		return false, fmt.Errorf("server does not support RESPONSE-PORT (%w)", err)
	}
	return false, fmt.Errorf("binding lifetime: %w", err)
}

func (d *discovery) closeSock(name string) {
	d.mu.Lock()
	s := d.socks[name]
	delete(d.socks, name)
	d.mu.Unlock()
	if s != nil {
		s.close()
	}
}
