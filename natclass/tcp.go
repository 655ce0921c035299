package natclass

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/pion/stun/v3"

	"github.com/natlab/natlab/internal/millis"
	"github.com/natlab/natlab/internal/netaddr"
	"github.com/natlab/natlab/internal/sockopt"
	"github.com/natlab/natlab/internal/stuntx"
)

// TCP behaviour (RFC 5382) is measured beside the UDP profile, over
// connections to the same server: a router often builds cone behaviour
// from rules written for UDP only, and its TCP is then something else.
//
//   - mapping: connections from one local port to IP1:P1, IP2:P1 and IP2:P2,
//     each with a Binding request; the three XOR-MAPPED-ADDRESSes compare
//     as RFC 5780 §4.3's.
//   - filtering: from two fresh ports, each with a listener on the same
//     port, a Binding request to IP1:P1 carrying CONNECT-BACK (natlab
//     serve's extension; see server/tcp_behavior.go): the server then
//     connects from IP2:P2 (change IP and port) or IP1:P2 (change port) to
//     the connection's mapped address. Whether that unsolicited SYN is
//     accepted is RFC 5780 §4.4's answer for TCP.
//   - port allocation: the mapped ports of every fresh local port.

// Test names of the TCP profile's NotRun.
const (
	TestTCPMapping        = "tcp_mapping"
	TestTCPFiltering      = "tcp_filtering"
	TestTCPPortAllocation = "tcp_port_allocation"
)

// AttrConnectBack is natlab serve's CONNECT-BACK attribute (0xC0A1,
// comprehension-optional): in a Binding request over TCP, CHANGE-REQUEST's
// flags; in the answer, the address the server connects back from.
const AttrConnectBack stun.AttrType = 0xC0A1

// Timeouts of the TCP tests.
const (
	// tcpConnectTimeout is how long a connect to the server may take
	// before TCP counts as blocked: as long as UDP gets (udpBlockedTimeout).
	tcpConnectTimeout = udpBlockedTimeout
	// tcpAllocSamples is how many fresh ports sample the port allocation,
	// all at once: four gaps, of which two must agree on a step.
	tcpAllocSamples = 5
)

// TCPProfile is the TCP NAT behaviour of this host: the "tcp" object of
// the profile.
type TCPProfile struct {
	// Reached: true when a TCP connection to the server was made; false
	// when none was (TCP blocked, or the server is not listening and the
	// network drops the refusal); null when not tried.
	Reached        Tri             `json:"reached"`
	Mapping        Behavior        `json:"mapping"`                  // "" when undetermined
	Filtering      Behavior        `json:"filtering"`                // "" when undetermined
	MappedAddress  string          `json:"mapped_address,omitempty"` // ip:port the server saw
	LocalAddress   string          `json:"local_address,omitempty"`  // ip:port of the connection on this host
	PortAllocation *PortAllocation `json:"port_allocation"`          // null when not measured
	Server         string          `json:"server,omitempty"`         // the server the tests ran against
	RTTMillis      float64         `json:"rtt_ms,omitempty"`         // a Binding round trip over the connection
	NotRun         []NotRun        `json:"not_run"`                  // tests that could not run, and why
	DurationMillis float64         `json:"duration_ms"`              // wall time of the TCP tests
}

// Known reports whether the TCP mapping and filtering were both measured.
func (t *TCPProfile) Known() bool {
	return t != nil && t.Reached == Yes && t.Mapping != "" && t.Filtering != ""
}

// tcpResult is one Binding over one TCP connection.
type tcpResult struct {
	local, mapped, other netip.AddrPort
	cb                   netip.AddrPort // CONNECT-BACK's source, when asked for
	rtt                  time.Duration
	err                  error
	// c is the connection, left open so the NAT keeps its mapping while
	// the other tests run; close it with done.
	c net.Conn
}

func (r tcpResult) done() {
	if r.c != nil {
		_ = r.c.Close()
	}
}

// tcpDiscovery runs the TCP tests against the given servers.
type tcpDiscovery struct {
	opts    Options
	servers []string
	addrs   []netip.AddrPort
	// gate opens when the UDP port allocation samples have been sent: a
	// sequential allocator counts TCP and UDP mappings alike, so the TCP
	// tests' new mappings must not fall between the UDP samples.
	gate <-chan struct{}
}

// discoverTCP measures the TCP profile; it never fails, it reports.
func discoverTCP(ctx context.Context, opts Options, addrs []netip.AddrPort, gate <-chan struct{}) *TCPProfile {
	start := time.Now()
	t := &tcpDiscovery{opts: opts, servers: opts.Servers, addrs: addrs, gate: gate}
	p := &TCPProfile{NotRun: []NotRun{}}
	t.run(ctx, p)
	p.DurationMillis = millis.Since(start)
	return p
}

func (p *TCPProfile) notRunAll(reason string) {
	for _, n := range []string{TestTCPMapping, TestTCPFiltering, TestTCPPortAllocation} {
		p.NotRun = append(p.NotRun, NotRun{Test: n, Reason: reason})
	}
}

func (t *tcpDiscovery) run(ctx context.Context, p *TCPProfile) {
	// ListenTCP first: some stacks (pion's vnet) accept a ListenConfig
	// for TCP but have no TCP to dial with.
	probe, err := t.opts.Net.ListenTCP(t.opts.Family.tcp(), &net.TCPAddr{})
	if err == nil {
		_ = probe.Close()
		var ln net.Listener
		if ln, err = t.listen(ctx); err == nil {
			t.measure(ctx, p, ln)
			return
		}
	}
	p.notRunAll("this network stack has no TCP: " + err.Error())
}

// measure runs the tests; ln holds the mapping test's port.
func (t *tcpDiscovery) measure(ctx context.Context, p *TCPProfile, ln net.Listener) {
	defer ln.Close() // holds the mapping port; nothing connects to it
	lport := netaddr.AddrPort(ln.Addr()).Port()
	// With one server the filtering tests start beside test I: their
	// mappings, like test I's, exist before the UDP allocation samples
	// (which wait for UDP's test I), and their wait overlaps the rest.
	var f *filterRun
	if len(t.addrs) == 1 {
		f = t.startFiltering(ctx, t.addrs[0])
	}
	first, server, refused := t.first(ctx, lport)
	defer first.done()
	if first.err != nil {
		f.wait()
		if refused {
			p.notRunAll("the server refused TCP: it serves STUN over UDP only")
			return
		}
		p.Reached = No
		p.notRunAll("no TCP connection to the server: " + first.err.Error())
		return
	}
	p.Reached = Yes
	p.Server, p.MappedAddress, p.RTTMillis = t.servers[server], first.mapped.String(), millis.Of(first.rtt)
	primary := t.addrs[server]
	local := t.localAddr(first.local, first.mapped, primary)
	p.LocalAddress = local.String()
	other := Via64(t.opts.NAT64, first.other)
	if other.IsValid() && (other.Addr() == primary.Addr() || other.Port() == primary.Port()) {
		other = netip.AddrPort{} // not a usable RFC 5780 plan
	}
	select {
	case <-t.gate:
	case <-ctx.Done():
	}

	// The allocation samples start once every other new mapping exists,
	// so nothing falls between them.
	var wg, made sync.WaitGroup
	var m2, m3 tcpResult
	if other.IsValid() {
		made.Add(2)
		wg.Go(func() {
			defer made.Done()
			m2 = t.binding(ctx, lport, netip.AddrPortFrom(other.Addr(), primary.Port()), 0)
		})
		wg.Go(func() { defer made.Done(); m3 = t.binding(ctx, lport, other, 0) })
	}
	if f == nil {
		f = t.startFiltering(ctx, primary)
	}
	if t.opts.AllocSamples > 0 {
		wg.Go(func() { made.Wait(); f.made.Wait(); t.allocation(ctx, p, primary, tcpAllocSamples) })
	}
	wg.Wait()
	f.wait()
	m2.done()
	m3.done()
	p.classify(local != first.mapped, first, other.IsValid(), [2]tcpResult{m2, m3}, [3]tcpResult{f.f1, f.f2, f.f3}, f.f1c)
}

// filterRun is the two filtering tests under way.
type filterRun struct {
	f1, f2, f1c, f3 tcpResult      // each port's Binding and its connect-back
	made, wg        sync.WaitGroup // made: both outgoing connections exist
}

// startFiltering starts both filtering tests against primary.
func (t *tcpDiscovery) startFiltering(ctx context.Context, primary netip.AddrPort) *filterRun {
	f := &filterRun{}
	f.made.Add(2)
	f.wg.Go(func() {
		f.f1, f.f2 = t.filtering(ctx, primary, uint32(stuntx.ChangeIP|stuntx.ChangePort), f.made.Done)
	})
	f.wg.Go(func() { f.f1c, f.f3 = t.filtering(ctx, primary, uint32(stuntx.ChangePort), f.made.Done) })
	return f
}

// wait waits for both tests and closes their connections.
func (f *filterRun) wait() {
	if f == nil {
		return
	}
	f.wg.Wait()
	f.f1.done()
	f.f1c.done()
}

// classify sets mapping and filtering from the tests' results.
func (p *TCPProfile) classify(nat bool, first tcpResult, rfc5780 bool, m [2]tcpResult, f [3]tcpResult, f1c tcpResult) {
	mapping, why := classifyMapping(nat, first.mapped, probeResult{mapped: m[0].mapped, err: m[0].err}, probeResult{mapped: m[1].mapped, err: m[1].err}, rfc5780)
	p.Mapping = mapping
	switch {
	case why != "":
		p.NotRun = append(p.NotRun, NotRun{Test: TestTCPMapping, Reason: why})
	case mapping == "":
		p.NotRun = append(p.NotRun, NotRun{Test: TestTCPMapping, Reason: "the server sent no OTHER-ADDRESS over TCP (not natlab serve, or it has no second address and port)"})
	}
	fb, why := classifyTCPFiltering(f[0].err, f1c.err, f[1].err, f[2].err)
	p.Filtering = fb
	if why != "" {
		p.NotRun = append(p.NotRun, NotRun{Test: TestTCPFiltering, Reason: why})
	}
}

// classifyTCPFiltering is RFC 5780 §4.4 for connect-backs: first1 and
// first2 are the two filtering ports' Bindings to the primary, back2 (from
// the other address and port) and back3 (from the other port) whether the
// server's connection arrived.
func classifyTCPFiltering(first1, first2, back2, back3 error) (Behavior, string) {
	for _, err := range []error{first1, first2} {
		if err != nil {
			return "", "filtering test I over TCP: " + err.Error()
		}
	}
	switch {
	case back2 == nil:
		return EndpointIndependent, ""
	case !errors.Is(back2, errTimeout):
		return "", "connect-back from the other address and port: " + back2.Error()
	case back3 == nil:
		return AddressDependent, ""
	case !errors.Is(back3, errTimeout):
		return "", "connect-back from the other port: " + back3.Error()
	}
	return AddressAndPortDependent, ""
}

// allocation samples the port allocation: n fresh ports connecting to
// primary at once. The classifier sorts the mapped ports, so their order
// does not matter; what matters is that no other new mapping falls among
// them, which the caller sees to. (The sign of a descending step, which
// the UDP samples' order tells, is not kept: the TCP predictions do not
// use the allocation.)
func (t *tcpDiscovery) allocation(ctx context.Context, p *TCPProfile, primary netip.AddrPort, n int) {
	rs := make([]tcpResult, n)
	var wg sync.WaitGroup
	for i := range rs {
		wg.Go(func() { rs[i] = t.binding(ctx, 0, primary, 0) })
	}
	wg.Wait()
	var samples []allocSample
	for _, r := range rs {
		r.done()
		if r.err == nil {
			samples = append(samples, allocSample{local: r.local.Port(), mapped: r.mapped.Port()})
		}
	}
	if pa, why := classifyAllocation(samples); pa != nil {
		p.PortAllocation = pa
		if pa.Step < 0 {
			pa.Step = -pa.Step
		}
	} else {
		p.NotRun = append(p.NotRun, NotRun{Test: TestTCPPortAllocation, Reason: why})
	}
}

// localAddr is the connection's address on this host, as for UDP.
func (t *tcpDiscovery) localAddr(sockAddr, mapped, server netip.AddrPort) netip.AddrPort {
	if sockAddr.Addr().IsValid() && !sockAddr.Addr().IsUnspecified() {
		return sockAddr // a connected socket knows its address
	}
	d := &discovery{opts: t.opts}
	return d.localAddr(sockAddr, mapped, server)
}

func (t *tcpDiscovery) listen(ctx context.Context) (net.Listener, error) {
	lc := t.opts.Net.CreateListenConfig(&net.ListenConfig{Control: sockopt.Reuse})
	ln, err := lc.Listen(ctx, t.opts.Family.tcp(), t.opts.Family.wildcard())
	if err != nil {
		return nil, fmt.Errorf("tcp listen: %w", err)
	}
	return ln, nil
}

// first is test I over TCP to every server at once from port lport: the
// first that answers is the one the other tests use. refused reports that
// every server refused the connection.
func (t *tcpDiscovery) first(ctx context.Context, lport uint16) (r tcpResult, server int, refused bool) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rs := make([]tcpResult, len(t.addrs))
	done := make(chan int, len(t.addrs))
	for i, a := range t.addrs {
		go func() { rs[i] = t.binding(ctx, lport, a, 0); done <- i }()
	}
	server, refused = -1, true
	var firstErr error
	for range t.addrs {
		i := <-done
		switch {
		case server >= 0:
			rs[i].done()
		case rs[i].err == nil:
			server = i
			cancel() // the others are not needed
		default:
			if !errors.Is(rs[i].err, syscall.ECONNREFUSED) {
				refused = false
			}
			if firstErr == nil {
				firstErr = rs[i].err
			}
		}
	}
	if server >= 0 {
		return rs[server], server, false
	}
	return tcpResult{err: firstErr}, -1, refused
}

// filtering runs one filtering test on a fresh port: listen, connect from
// the same port to primary, ask for a connect-back with flags, and wait
// for it. first is the Binding on the outgoing connection; back's error is
// nil when the connect-back arrived, errTimeout when it did not.
// made is called once the outgoing connection exists (or never will).
func (t *tcpDiscovery) filtering(ctx context.Context, primary netip.AddrPort, flags uint32, made func()) (first, back tcpResult) {
	ln, err := t.listen(ctx)
	if err != nil {
		made()
		return tcpResult{err: err}, tcpResult{err: err}
	}
	defer ln.Close()
	port := netaddr.AddrPort(ln.Addr()).Port()
	first = t.binding(ctx, port, primary, flags)
	made()
	// first's connection stays open through the wait: the caller closes it.
	if first.err != nil {
		return first, tcpResult{err: fmt.Errorf("skipped: %w", first.err)}
	}
	if !first.cb.IsValid() {
		err := &ServerError{Reason: "the server ignored CONNECT-BACK (not natlab serve, or an older one)"}
		return first, tcpResult{err: err}
	}
	// The wait follows this connection's own round trip.
	return first, t.awaitConnectBack(ctx, ln, first.cb, tcpNegativeWait(first.rtt))
}

// tcpNegativeWait is how long a connect-back may take before its absence
// counts as filtering: the UDP tests' whole budget (negativeAttempts waits
// of max(negativeRTTs × RTT, minNegativeWait)), as one SYN has no
// retransmission soon enough to wait for.
func tcpNegativeWait(rtt time.Duration) time.Duration {
	return time.Duration(negativeAttempts) * max(negativeRTTs*rtt, minNegativeWait)
}

// awaitConnectBack accepts on ln until a connection from src delivers a
// STUN message, or wait passes.
func (t *tcpDiscovery) awaitConnectBack(ctx context.Context, ln net.Listener, src netip.AddrPort, wait time.Duration) tcpResult {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { _ = ln.Close() })
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return tcpResult{err: errTimeout}
			}
			return tcpResult{err: fmt.Errorf("accept: %w", err)}
		}
		from := netaddr.AddrPort(c.RemoteAddr())
		if from != src {
			_ = c.Close() // not the server's connect-back
			continue
		}
		stopC := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
		_, err = stuntx.ReadStream(c)
		stopC()
		_ = c.Close()
		if err != nil {
			return tcpResult{err: fmt.Errorf("connect-back from %s: %w", src, err)}
		}
		return tcpResult{}
	}
}

// binding connects from lport (0: a fresh port) to `to`, sends one Binding
// request (with CONNECT-BACK when flags is not 0) and reads the answer.
func (t *tcpDiscovery) binding(ctx context.Context, lport uint16, to netip.AddrPort, flags uint32) (r tcpResult) {
	ctx, cancel := context.WithTimeout(ctx, tcpConnectTimeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	d := t.opts.Net.CreateDialer(&net.Dialer{
		LocalAddr: &net.TCPAddr{Port: int(lport)},
		Control:   sockopt.Reuse,
		Deadline:  deadline,
		Cancel:    ctx.Done(), // DialContext is not in transport.Dialer
	})
	c, err := d.Dial(t.opts.Family.tcp(), to.String())
	if err != nil {
		return tcpResult{err: fmt.Errorf("connect to %s: %w", to, err)}
	}
	r = tcpResult{local: netaddr.AddrPort(c.LocalAddr())}
	defer func() {
		if r.err != nil {
			_ = c.Close()
		} else {
			r.c = c
		}
	}()
	var attrs []stun.Setter
	if flags != 0 {
		attrs = append(attrs, connectBack(flags))
	}
	req, err := stuntx.Request(attrs...)
	if err != nil {
		r.err = err
		return r
	}
	a, err := stuntx.Stream(ctx, c, req)
	if err != nil {
		r.err = err
		return r
	}
	r.rtt = a.RTT
	var ok bool
	if r.mapped, ok = stuntx.Mapped(a.Msg); !ok {
		r.err = errors.New("response without a mapped address")
		return r
	}
	r.other, _ = stuntx.Other(a.Msg)
	r.cb, _ = stuntx.AddrAttr(a.Msg, AttrConnectBack)
	return r
}

type connectBack uint32

func (f connectBack) AddTo(m *stun.Message) error {
	m.Add(AttrConnectBack, binary.BigEndian.AppendUint32(nil, uint32(f)))
	return nil
}

// Brief is the TCP profile in a few words for views: "EIM APDF
// preserving", "blocked" or "not measured".
func (t *TCPProfile) Brief() string {
	if t == nil {
		return tcpBrief(NotChecked, "", "", "")
	}
	var a Allocation
	if t.PortAllocation != nil {
		a = t.PortAllocation.Pattern
	}
	return tcpBrief(t.Reached, t.Mapping, t.Filtering, a)
}

// Brief is the peer's TCP profile in the same words as TCPProfile.Brief.
func (t *TCPSummary) Brief() string {
	if t == nil {
		return tcpBrief(NotChecked, "", "", "")
	}
	return tcpBrief(t.Reached, t.Mapping, t.Filtering, t.Allocation)
}

func tcpBrief(reached Tri, m, f Behavior, a Allocation) string {
	switch reached {
	case NotChecked:
		return "not measured"
	case No:
		return "blocked"
	}
	s := m.Abbrev("M") + " " + f.Abbrev("F")
	if a != "" {
		s += " " + string(a)
	}
	return s
}
