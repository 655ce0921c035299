package natclass

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/natlab/natlab/internal/stuntx"
)

// Lifetime measurement, each with why.
const (
	// lifetimeLinearSteps: up to this many resolutions the probes are a
	// resolution apart; beyond, lifetimeGrowth apart (relative), so a
	// two-minute bound needs about 60 mappings, not 120.
	lifetimeLinearSteps = 20
	lifetimeGrowth      = 0.05
	// establishAfter is how long a mapping carries traffic both ways
	// before it counts as established: Linux makes a UDP flow a stream
	// (nf_conntrack_udp_timeout_stream) for a packet more than two
	// seconds after the first.
	establishAfter = 2*time.Second + 200*time.Millisecond
	// establishEvery is the exchange interval while establishing.
	establishEvery = 500 * time.Millisecond
	// lifetimeMinWait: the lifetime's exchanges wait at least this long
	// for an answer per attempt. Only a dead mapping waits it out, and a
	// late answer read as a dead mapping would cut the lifetime short.
	lifetimeMinWait = 250 * time.Millisecond
)

// lifetimeSchedule is the lifetime exchanges' schedule: the negative
// tests' RTT-derived one, with a floor of lifetimeMinWait per attempt.
func (d *discovery) lifetimeSchedule() schedule {
	return fromStuntx(stuntx.Spaced(negativeAttempts, stuntx.RTTWait(d.rtt, negativeRTTs, lifetimeMinWait)))
}

// lifetimeGrid is when the mappings are tested: every res up to
// lifetimeLinearSteps·res, then lifetimeGrowth apart, up to hi.
func lifetimeGrid(res, hi time.Duration) []time.Duration {
	var g []time.Duration
	for t := res; t < hi; {
		g = append(g, t)
		step := res
		if len(g) >= lifetimeLinearSteps {
			step = max(res, time.Duration(float64(t)*lifetimeGrowth).Truncate(res))
		}
		t += step
	}
	return append(g, hi)
}

// lifetime measures how long an idle mapping survives (RFC 5780 §4.6, with
// RESPONSE-PORT), twice at once: for a mapping that only answered one
// request (idle), and for one that carried traffic both ways for more than
// two seconds first (established; Linux keeps those 120 s, not 30 s). Each
// measurement opens one mapping per time on a grid, all at once, and tests
// the k-th after its k-th idle period: socket Y asks the server to answer
// to the mapping's port, and the mapping's socket hearing it means it was
// alive. The first silent mapping ends the measurement, so it takes about
// the lifetime itself, not the sum of a bisection's waits.
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
	// Check the method works at all before waiting on it.
	if ok, err := d.freshAnswered(ctx); err != nil || !ok {
		if err == nil {
			err = errors.New("a fresh mapping did not receive the RESPONSE-PORT answer")
		}
		notRun(err.Error())
		return
	}
	grid := lifetimeGrid(res, hi)
	var idle, est lifetimeResult
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); idle = d.lifetimeOnGrid(ctx, "idle", grid, false) }()
	go func() { defer wg.Done(); est = d.lifetimeOnGrid(ctx, "est", grid, true) }()
	wg.Wait()
	for _, r := range []struct {
		lifetimeResult
		dst  **float64
		what string
	}{{idle, &p.BindingLifetimeS, "binding lifetime"}, {est, &p.EstablishedLifetimeS, "established binding lifetime"}} {
		if r.err != nil {
			notRun(fmt.Sprintf("%s: %v", r.what, r.err))
			continue
		}
		v := r.alive.Seconds()
		*r.dst = &v
		if r.atBound {
			p.Hints = append(p.Hints, fmt.Sprintf("%s is at least %v (the search bound)", r.what, r.alive.Round(time.Second)))
		}
	}
}

// lifetimeResult: the longest idle time a mapping survived, whether no
// mapping died before the bound, or why the measurement failed.
type lifetimeResult struct {
	alive   time.Duration
	atBound bool
	err     error
}

// lifetimeMapping is one mapping of the grid.
type lifetimeMapping struct {
	x      *sock
	mapped netip.AddrPort
	quiet  time.Time // when it last sent
}

// lifetimeOnGrid opens one mapping per grid time, lets them all go quiet
// together and tests them in order; the first dead one ends it.
func (d *discovery) lifetimeOnGrid(ctx context.Context, tag string, grid []time.Duration, established bool) lifetimeResult {
	ms, err := d.lifetimeMappings(ctx, tag, len(grid), established)
	defer func() {
		for i := range len(grid) {
			d.closeSock(fmt.Sprintf("lifetime-%s-x-%d", tag, i))
		}
		d.closeSock("lifetime-" + tag + "-y")
	}()
	if err != nil {
		return lifetimeResult{err: err}
	}
	y, err := d.socket("lifetime-" + tag + "-y")
	if err != nil {
		return lifetimeResult{err: err}
	}
	// A silent mapping followed by one that answers was a lost packet,
	// not the end: the lifetime ends at two silent mappings in a row.
	var r lifetimeResult
	silent := 0
	for i, t := range grid {
		if !ms[i].mapped.IsValid() {
			continue // its first exchange went unanswered
		}
		tm := time.NewTimer(time.Until(ms[i].quiet.Add(t)))
		select {
		case <-ctx.Done():
			tm.Stop()
			return lifetimeResult{err: ctx.Err()}
		case <-tm.C:
		}
		ok, err := d.answered(ctx, y, ms[i])
		d.closeSock(fmt.Sprintf("lifetime-%s-x-%d", tag, i))
		switch {
		case err != nil:
			return lifetimeResult{err: err}
		case !ok:
			if silent++; silent == 2 {
				return r
			}
			continue
		}
		silent, r.alive = 0, t
	}
	r.atBound = silent == 0
	return r
}

// lifetimeMappings opens n mappings toward the primary at once; with
// established, each keeps exchanging requests for establishAfter, so it
// has carried traffic both ways that long. A mapping whose exchange goes
// unanswered is left out (its address stays invalid); only a grid that
// lost most of them fails.
func (d *discovery) lifetimeMappings(ctx context.Context, tag string, n int, established bool) ([]lifetimeMapping, error) {
	ms := make([]lifetimeMapping, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range ms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = d.lifetimeMapping(ctx, fmt.Sprintf("lifetime-%s-x-%d", tag, i), established, &ms[i])
			if errs[i] != nil {
				ms[i].mapped = netip.AddrPort{}
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	failed := 0
	var first error
	for _, err := range errs {
		if err != nil {
			failed++
			first = cmp.Or(first, err)
		}
	}
	if failed > n/2 {
		return nil, fmt.Errorf("%d of %d mappings failed: %w", failed, n, first)
	}
	return ms, nil
}

// lifetimeMapping opens one mapping of the grid into m.
func (d *discovery) lifetimeMapping(ctx context.Context, name string, established bool, m *lifetimeMapping) error {
	x, err := d.socket(name)
	if err != nil {
		return err
	}
	m.x = x
	if m.mapped, err = d.bind(ctx, x); err != nil {
		return err
	}
	m.quiet = time.Now()
	// Keep exchanging (a short idle lifetime must not end the mapping
	// meanwhile) until it is established.
	for first := m.quiet; established && time.Since(first) < establishAfter; {
		tm := time.NewTimer(establishEvery)
		select {
		case <-ctx.Done():
			tm.Stop()
			return ctx.Err()
		case <-tm.C:
		}
		again, err := d.bind(ctx, x)
		if err != nil {
			return err
		}
		m.quiet = time.Now()
		if again != m.mapped {
			return fmt.Errorf("the mapping moved from %v to %v while in use", m.mapped, again)
		}
	}
	return nil
}

// bind asks the primary for x's mapped address.
func (d *discovery) bind(ctx context.Context, x *sock) (netip.AddrPort, error) {
	pk, _, err := x.transact(ctx, x, d.primary, d.lifetimeSchedule())
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("binding lifetime: %w", err)
	}
	m, ok := stuntx.Mapped(pk.Msg)
	if !ok {
		return netip.AddrPort{}, errors.New("binding lifetime: response without a mapped address")
	}
	return m, nil
}

// answered reports whether the server's answer, sent to m's mapped port
// at y's request (RESPONSE-PORT), reaches m's socket.
func (d *discovery) answered(ctx context.Context, y *sock, m lifetimeMapping) (bool, error) {
	pk, _, err := y.transact(ctx, m.x, d.primary, d.lifetimeSchedule(), stuntx.ResponsePort(m.mapped.Port()))
	var se *ServerError
	switch {
	case err == nil && pk.Via != m.x:
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

// freshAnswered checks the method on a fresh mapping: the server honours
// RESPONSE-PORT and its answer reaches the mapping.
func (d *discovery) freshAnswered(ctx context.Context) (bool, error) {
	defer d.closeSock("lifetime-x")
	defer d.closeSock("lifetime-y")
	x, err := d.socket("lifetime-x")
	if err != nil {
		return false, err
	}
	y, err := d.socket("lifetime-y")
	if err != nil {
		return false, err
	}
	m, err := d.bind(ctx, x)
	if err != nil {
		return false, err
	}
	return d.answered(ctx, y, lifetimeMapping{x: x, mapped: m})
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
