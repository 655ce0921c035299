package natclass

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pion/stun/v3"
	"github.com/pion/transport/v4"

	"github.com/natlab/natlab/internal/millis"
	"github.com/natlab/natlab/internal/netaddr"
	"github.com/natlab/natlab/internal/stuntx"
)

// Timeouts of the discovery, each with why it has that value.
const (
	// DefaultTimeout bounds a whole check: with a responsive server it takes
	// a few round trips, and anything past 5 s is not worth waiting for.
	DefaultTimeout = 5 * time.Second
	// udpBlockedTimeout is how long test I may go unanswered before
	// concluding UDP is blocked (or the server is down): enough for five
	// transmissions with doubling intervals from initialRTO.
	udpBlockedTimeout = 3 * time.Second
	// initialRTO is the first retransmission interval, before any RTT is
	// known: RFC 8489 suggests 500 ms, but a check is interactive and
	// duplicates cost nothing, so start like tailscale netcheck does.
	initialRTO = 100 * time.Millisecond
	// minNegativeWait is the floor of the wait that turns silence into a
	// result (filtering, hairpin): on loopback the RTT is microseconds and
	// the scheduler's jitter is larger than that.
	minNegativeWait = 50 * time.Millisecond
	// negativeRTTs is how many measured RTTs one attempt of a negative
	// test waits: an answer later than four RTTs is lost, not slow.
	negativeRTTs = 4
	// negativeAttempts is how many transmissions a negative test makes, so
	// one lost packet does not read as filtering.
	negativeAttempts = 3
	// positiveBudget is how long a probe of the plan that must be answered
	// (mapping II/III, filtering I, the port allocation samples) keeps
	// retransmitting: as long as test I may. Test I proved the path, so
	// silence there is a late or lost answer (a loaded machine, a lost
	// first packet), and waiting costs nothing when the answer is prompt.
	positiveBudget = udpBlockedTimeout
	// extraServerGrace is how long, after the first server answers, the
	// others may still answer test I; later ones are reported as silent.
	extraServerGrace = 250 * time.Millisecond
	// DefaultAllocSamples is the number of fresh sockets used to see the
	// port allocation pattern: seven deltas tolerate a few foreign
	// mappings interleaved by other traffic.
	DefaultAllocSamples = 8
	// DefaultLifetimeMax bounds the binding lifetime search: mappings that
	// outlive it are reported as at least this long.
	DefaultLifetimeMax = 2 * time.Minute
	// lifetimeResolution stops the bisection: a second is finer than any
	// NAT's timer granularity that matters to keepalive intervals.
	lifetimeResolution = time.Second
)

// Options configure Discover.
type Options struct {
	// Net opens sockets: stdnet.NewNet() for the host, a lab Net in tests.
	Net transport.Net
	// Servers are STUN servers as host:port. The first that answers is the
	// primary; the others add evidence (mapping across servers).
	Servers []string
	// Timeout bounds the whole check (DefaultTimeout when 0; ignored for
	// the extra time a Lifetime measurement needs).
	Timeout time.Duration
	// Lifetime enables the binding lifetime measurement (slow: it has to
	// wait for mappings to expire).
	Lifetime bool
	// LifetimeMax bounds the lifetime search (DefaultLifetimeMax when 0).
	LifetimeMax time.Duration
	// LifetimeResolution ends the bisection (one second when 0).
	LifetimeResolution time.Duration
	// AllocSamples is the number of port allocation samples
	// (DefaultAllocSamples when 0, none when negative).
	AllocSamples int
	// NoTCP skips the TCP behaviour tests (Profile.TCP stays nil).
	NoTCP bool
	// Family is the IP version to check over (IPv4 when zero); Servers
	// must have addresses of that family.
	Family Family
	// NAT64, with Family IPv6, is the NAT64 prefix (DiscoverNAT64): IPv4
	// servers and the IPv4 addresses they name (OTHER-ADDRESS) are
	// reached at their synthesised addresses, so the profile is the
	// NAT64's IPv4 side.
	NAT64 netip.Prefix
	// Logger receives debug notes; nil discards them.
	Logger *slog.Logger
}

// PortAllocation is the observed port allocation pattern.
type PortAllocation struct {
	Pattern Allocation `json:"pattern"`        // preserving, sequential or random
	Step    int        `json:"step,omitempty"` // the port increment of a sequential allocator
	Samples []int      `json:"samples"`        // external ports of fresh sockets, in the order they were opened
}

// ServerResult is what one of the given servers answered to test I.
type ServerResult struct {
	Server        string  `json:"server"`                   // as given, host:port
	Address       string  `json:"address,omitempty"`        // resolved ip:port
	MappedAddress string  `json:"mapped_address,omitempty"` // our address as it saw it
	OtherAddress  string  `json:"other_address,omitempty"`  // its RFC 5780 OTHER-ADDRESS, if any
	RTTMillis     float64 `json:"rtt_ms,omitempty"`         // time to the first answer
	Error         string  `json:"error,omitempty"`          // why it gave no mapping
}

// Profile is the NAT profile of this host: the JSON object of `natlab check`.
type Profile struct {
	NATType          NATType         `json:"nat_type"`                     // classic RFC 3489 name, "unknown" when undetermined
	Mapping          Behavior        `json:"mapping"`                      // RFC 4787 mapping behaviour, "" when undetermined
	Filtering        Behavior        `json:"filtering"`                    // RFC 4787 filtering behaviour, "" when undetermined
	MappedAddress    string          `json:"mapped_address"`               // ip:port the primary server saw
	LocalAddress     string          `json:"local_address"`                // ip:port of the socket on this host
	Hairpinning      Tri             `json:"hairpinning"`                  // true, false, or null when not checked
	PortAllocation   *PortAllocation `json:"port_allocation"`              // null when not measured
	BindingLifetimeS *float64        `json:"binding_lifetime_s,omitempty"` // idle lifetime of a mapping, when measured
	// EstablishedLifetimeS is the idle lifetime of a mapping that carried
	// traffic both ways first (Linux conntrack keeps those longer).
	EstablishedLifetimeS *float64       `json:"binding_lifetime_established_s,omitempty"`
	Server               string         `json:"server"`                  // the primary server (the first that answered)
	OtherAddress         string         `json:"other_address,omitempty"` // the primary's OTHER-ADDRESS
	RTTMillis            float64        `json:"rtt_ms"`                  // round trip to the primary
	NATDepth             *int           `json:"nat_depth,omitempty"`     // NATs in front of this host (hops in private space before the first public one), when measured
	Hops                 []string       `json:"hops,omitempty"`          // routers towards the primary ("*": silent), then the primary if reached
	Hints                []string       `json:"hints"`                   // extra findings, e.g. "cgnat"
	NotRun               []NotRun       `json:"not_run"`                 // tests that could not run, with why
	Servers              []ServerResult `json:"servers"`                 // test I against every given server
	TCP                  *TCPProfile    `json:"tcp"`                     // TCP behaviour (RFC 5382); null when not measured
	// Family is "ipv4" or "ipv6": the IP version this profile measured.
	Family string `json:"family,omitempty"`
	// Translation (IPv6 only) is what happens to the source address:
	// "none" (the address the server saw is ours: a firewall at most),
	// "nptv6" (prefix translated, interface identifier and port kept:
	// RFC 6296), "nat66" (address replaced, a masquerading NAT).
	Translation string `json:"ipv6_translation,omitempty"`
	// GlobalAddresses (IPv6 only) are this host's global IPv6 addresses
	// (not link-local, not unique-local).
	GlobalAddresses []string `json:"global_addresses,omitempty"`
	// NAT64Prefix is the NAT64 prefix the check went through (RFC 7050),
	// when it did: the profile is then the NAT64's IPv4 side.
	NAT64Prefix    string  `json:"nat64_prefix,omitempty"`
	DurationMillis float64 `json:"duration_ms"` // wall time of the check
}

// Hints.
const (
	HintCGNAT = "cgnat" // an address in 100.64.0.0/10 (RFC 6598): a carrier-grade NAT is on the path
)

var cgnatPrefix = netip.MustParsePrefix("100.64.0.0/10")

// ErrNoServers is returned when Options.Servers is empty.
var ErrNoServers = errors.New("no STUN server given")

// ParseServer checks a host:port and returns it normalised; it does not
// resolve the host.
func ParseServer(s string) (host string, port uint16, err error) {
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, fmt.Errorf("STUN server %q: want host:port: %w", s, err)
	}
	if h == "" {
		return "", 0, fmt.Errorf("STUN server %q: empty host", s)
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil || n == 0 {
		return "", 0, fmt.Errorf("STUN server %q: port %q is not in 1-65535", s, p)
	}
	return h, uint16(n), nil
}

// Discover runs the RFC 5780 tests against opts.Servers and returns the
// profile. A host whose UDP gets no answer at all yields a profile with
// NATType UDPBlocked and a nil error; errors are for bad input and local
// failures.
func Discover(ctx context.Context, opts Options) (*Profile, error) {
	start := time.Now()
	if opts.Net == nil {
		return nil, errors.New("natclass: Options.Net is nil")
	}
	if len(opts.Servers) == 0 {
		return nil, ErrNoServers
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.AllocSamples == 0 {
		opts.AllocSamples = DefaultAllocSamples
	}
	if opts.AllocSamples < 0 {
		opts.AllocSamples = 0
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	checkCtx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	addrs := make([]netip.AddrPort, len(opts.Servers))
	for i, s := range opts.Servers {
		a, err := resolve(checkCtx, opts.Net, s, opts.Family, opts.NAT64)
		if err != nil {
			return nil, err
		}
		addrs[i] = a
	}

	d := &discovery{opts: opts, log: log, socks: map[string]*sock{}, allocSent: make(chan struct{})}
	d.openGate = sync.OnceFunc(func() { close(d.allocSent) })
	if opts.AllocSamples == 0 {
		d.openGate()
	}
	defer d.closeAll()
	tcpc := make(chan *TCPProfile, 1)
	if opts.NoTCP {
		tcpc <- nil
	} else {
		go func() { tcpc <- discoverTCP(checkCtx, opts, addrs, d.allocSent) }()
	}
	p, err := d.run(checkCtx, addrs)
	d.openGate()
	tcp := <-tcpc
	if err != nil {
		return nil, err
	}
	p.TCP = tcp
	p.translationOverTCP(d)
	if err := ctx.Err(); err != nil {
		// Interrupted: the tests cut short would read as negative results.
		return nil, fmt.Errorf("STUN check: %w", err)
	}
	if opts.Lifetime && p.NATType != UDPBlocked {
		d.lifetime(ctx, p)
	}
	p.DurationMillis = millis.Of(time.Since(start))
	return p, nil
}

// resolve turns host:port into an address of family f. Literal IPs need no
// lookup; names go through n, whose Resolve has no context, so the lookup
// runs aside and ctx bounds the wait (the lookup ends on its own later).
func resolve(ctx context.Context, n transport.Net, s string, f Family, nat64 netip.Prefix) (netip.AddrPort, error) {
	host, port, err := ParseServer(s)
	if err != nil {
		return netip.AddrPort{}, err
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		type result struct {
			a   *net.UDPAddr
			err error
		}
		ch := make(chan result, 1)
		go func() {
			a, err := n.ResolveUDPAddr(f.udp(), s)
			ch <- result{a, err}
		}()
		select {
		case r := <-ch:
			if r.err != nil {
				return netip.AddrPort{}, fmt.Errorf("resolve STUN server %s: %w", s, r.err)
			}
			ip = r.a.AddrPort().Addr()
		case <-ctx.Done():
			return netip.AddrPort{}, fmt.Errorf("resolve STUN server %s: %w", s, ctx.Err())
		}
	}
	ip = ip.Unmap()
	if f == IPv6 && ip.Is4() && nat64.IsValid() {
		ip = Synthesize(nat64, ip)
	}
	if !f.has(ip) {
		return netip.AddrPort{}, fmt.Errorf("STUN server %s is not an %s address: an %s check needs an %s server", s, f, f, f)
	}
	return netip.AddrPortFrom(ip, port), nil
}

type discovery struct {
	opts Options
	log  *slog.Logger

	mu    sync.Mutex
	socks map[string]*sock

	primary netip.AddrPort // IP1:P1
	other   netip.AddrPort // IP2:P2, invalid without RFC 5780
	rtt     time.Duration

	// allocSent is closed (by openGate) once the last port allocation
	// sample has gone out: the TCP tests' new mappings wait for it.
	allocSent chan struct{}
	openGate  func()
}

func (d *discovery) socket(name string) (*sock, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if s := d.socks[name]; s != nil {
		return s, nil
	}
	c, err := d.opts.Net.ListenPacket(d.opts.Family.udp(), d.opts.Family.wildcard())
	if err != nil {
		return nil, fmt.Errorf("open UDP socket: %w", err)
	}
	s := newSock(c)
	d.socks[name] = s
	return s, nil
}

func (d *discovery) closeAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for n, s := range d.socks {
		s.close()
		delete(d.socks, n)
	}
}

// firstSchedule is test I's: retransmit from initialRTO, doubling, until
// udpBlockedTimeout.
func firstSchedule() schedule { return fromStuntx(stuntx.Backoff(initialRTO, udpBlockedTimeout)) }

// rttWait is one wait of the plan's probes: negativeRTTs round trips, at
// least minNegativeWait.
func rttWait(rtt time.Duration) time.Duration {
	return stuntx.RTTWait(rtt, negativeRTTs, minNegativeWait)
}

// positiveSchedule is the schedule of a probe that must be answered (RFC
// 5389 §7.2.1): the first retransmission one RTT-derived wait after the
// first transmission, then doubling, until positiveBudget.
func positiveSchedule(rtt time.Duration) schedule {
	return fromStuntx(stuntx.Backoff(rttWait(rtt), positiveBudget))
}

// negativeSchedule is the schedule of a probe whose silence is a result:
// negativeAttempts transmissions one wait apart (one lost packet must not
// read as filtering), then doubling intervals while the plan's answers
// are still out. The probe never gives up on its own before
// positiveBudget: awaitSilence decides when silence counts.
func negativeSchedule(rtt time.Duration) schedule {
	w := rttWait(rtt)
	s := stuntx.Spaced(negativeAttempts, w)
	for t, gap := s.GiveUp, 2*w; t < positiveBudget; t, gap = t+gap, 2*gap {
		s.Sends = append(s.Sends, t)
	}
	s.GiveUp = max(s.GiveUp, positiveBudget)
	return fromStuntx(s)
}

func fromStuntx(s stuntx.Schedule) schedule { return schedule{sends: s.Sends, giveUp: s.GiveUp} }

// probeResult is the outcome of one probe of the plan.
type probeResult struct {
	mapped netip.AddrPort
	local  netip.AddrPort
	rtt    time.Duration // since the first transmission
	err    error
}

// firstResult is test I against one server.
type firstResult struct {
	pk  stuntx.Answer
	rtt time.Duration
	err error
}

func (d *discovery) run(ctx context.Context, addrs []netip.AddrPort) (*Profile, error) {
	p := &Profile{NATType: Unknown, Hints: []string{}, NotRun: []NotRun{}, Family: strings.ToLower(d.opts.Family.String())}
	ms0, err := d.socket(SockMapping)
	if err != nil {
		return nil, err
	}
	results := d.firstRound(ctx, ms0, addrs)
	primary := d.serverResults(ctx, p, addrs, results)
	if err := ctx.Err(); err != nil && primary < 0 && !errors.Is(err, context.DeadlineExceeded) {
		return nil, fmt.Errorf("STUN check: %w", err)
	}
	if primary < 0 {
		if err := d.diagnoseSilence(ctx, addrs, p); err != nil {
			return nil, err
		}
		p.NATType = UDPBlocked
		for _, t := range []string{TestMapping, TestFiltering, TestHairpinning, TestPortAllocation, TestNATDepth} {
			p.NotRun = append(p.NotRun, NotRun{Test: t, Reason: "no STUN server answered over UDP"})
		}
		return p, nil
	}

	pr := results[primary]
	d.primary, d.rtt = addrs[primary], pr.rtt
	m1, _ := stuntx.Mapped(pr.pk.Msg)
	p.Server, p.MappedAddress, p.RTTMillis = d.opts.Servers[primary], m1.String(), millis.Of(pr.rtt)
	if o, ok := stuntx.Other(pr.pk.Msg); ok && d.via(o).Addr() != d.primary.Addr() && o.Port() != d.primary.Port() {
		o = d.via(o)
		d.other = o
		p.OtherAddress = o.String()
	}
	local := d.localAddr(ms0.local, m1, d.primary)
	p.LocalAddress = local.String()
	nat := local != m1
	if d.opts.Family == IPv6 {
		p.Translation = Translation6(local, m1)
		if d.opts.NAT64.IsValid() {
			p.Translation, p.NAT64Prefix = TranslationNAT64, d.opts.NAT64.String()
		}
		p.GlobalAddresses = d.globalAddresses()
	}
	for _, a := range []netip.Addr{local.Addr(), m1.Addr()} {
		if cgnatPrefix.Contains(a) && !slices.Contains(p.Hints, HintCGNAT) {
			p.Hints = append(p.Hints, HintCGNAT)
		}
	}

	// Round 2: the plan, all sockets at once, beside the NAT depth trace
	// (whose requests go out first, so its mappings precede the port
	// allocation samples').
	plan, notRun := BuildPlan(PlanInput{OtherAddress: d.other.IsValid(), NAT: nat, AllocSamples: d.opts.AllocSamples})
	p.NotRun = append(p.NotRun, notRun...)
	hops := d.startHops(ctx, nat, m1.Addr())
	res := d.runPlan(ctx, plan, m1)

	symmetricByServers := d.mapping(p, nat, m1, res, otherMappings(addrs, results, primary))
	d.filtering(p, res)
	hairpinning(p, res)
	d.allocation(p, res)
	p.addHops(hops())
	p.NATType = ClassicName(nat, p.Mapping, p.Filtering)
	if symmetricByServers {
		p.NATType = Symmetric
	}
	return p, nil
}

// translationOverTCP tells an IPv6 host whose UDP is blocked what
// happened to its address from what its TCP connection measured (the
// server saw the TCP mapped address): a firewall passing TCP only still
// translates or not, and the host keeps its global addresses.
func (p *Profile) translationOverTCP(d *discovery) {
	if d.opts.Family != IPv6 || p.NATType != UDPBlocked || p.TCP == nil || p.TCP.Reached != Yes || d.opts.NAT64.IsValid() {
		return
	}
	local, err1 := netip.ParseAddrPort(p.TCP.LocalAddress)
	mapped, err2 := netip.ParseAddrPort(p.TCP.MappedAddress)
	if err1 != nil || err2 != nil {
		return
	}
	p.Translation, p.GlobalAddresses = Translation6(local, mapped), d.globalAddresses()
}

// firstRound is test I from the mapping socket to every server at once.
// It waits for all, but once one has answered gives the rest only a
// grace.
func (d *discovery) firstRound(ctx context.Context, ms0 *sock, addrs []netip.AddrPort) []firstResult {
	results := make([]firstResult, len(addrs))
	answered := make(chan int, len(addrs))
	var wg sync.WaitGroup
	r1ctx, r1cancel := context.WithCancel(ctx)
	defer r1cancel()
	for i, a := range addrs {
		wg.Go(func() {
			pk, rtt, err := d.firstTransaction(r1ctx, ms0, a)
			results[i] = firstResult{pk, rtt, err}
			answered <- i
		})
	}
	var grace <-chan time.Time
	for pending := len(addrs); pending > 0; {
		select {
		case i := <-answered:
			pending--
			if results[i].err == nil && grace == nil {
				t := time.NewTimer(extraServerGrace)
				defer t.Stop()
				grace = t.C
			}
		case <-grace:
			r1cancel()
			grace = nil
		}
	}
	wg.Wait()
	return results
}

// serverResults reports test I per server in p.Servers and returns the
// primary: the first server that answered, or -1.
func (d *discovery) serverResults(ctx context.Context, p *Profile, addrs []netip.AddrPort, results []firstResult) int {
	primary := -1
	for i, r := range results {
		sr := ServerResult{Server: d.opts.Servers[i], Address: addrs[i].String()}
		switch {
		case r.err == nil:
			if m, ok := stuntx.Mapped(r.pk.Msg); ok {
				sr.MappedAddress = m.String()
				sr.RTTMillis = millis.Of(r.rtt)
				if o, ok := stuntx.Other(r.pk.Msg); ok {
					sr.OtherAddress = o.String()
				}
				if primary < 0 {
					primary = i
				}
			} else {
				sr.Error = "response without a mapped address"
			}
		case errors.Is(r.err, errRefused):
			sr.Error = r.err.Error()
		case errors.Is(r.err, context.Canceled) && ctx.Err() == nil:
			sr.Error = fmt.Sprintf("no response within %v of the first server's", extraServerGrace)
		case errors.Is(r.err, errTimeout):
			sr.Error = fmt.Sprintf("no response within %v", udpBlockedTimeout)
		case errors.Is(r.err, context.DeadlineExceeded):
			sr.Error = fmt.Sprintf("no response within the check's timeout (%v)", d.opts.Timeout)
		default:
			sr.Error = r.err.Error()
		}
		p.Servers = append(p.Servers, sr)
	}
	return primary
}

// otherMappings are the mappings the servers other than the primary saw.
func otherMappings(addrs []netip.AddrPort, results []firstResult, primary int) []serverMapping {
	var others []serverMapping
	for i, r := range results {
		if i == primary || r.err != nil {
			continue
		}
		if m, ok := stuntx.Mapped(r.pk.Msg); ok {
			others = append(others, serverMapping{server: addrs[i], mapped: m})
		}
	}
	return others
}

// mapping classifies the mapping from tests II and III, else from plain
// STUN servers; it reports whether those only tell "symmetric".
func (d *discovery) mapping(p *Profile, nat bool, m1 netip.AddrPort, res *planResults, others []serverMapping) (symmetricByServers bool) {
	mapping, mnr := classifyMapping(nat, m1, res.mapping[0], res.mapping[1], d.other.IsValid())
	if mnr != "" {
		p.NotRun = append(p.NotRun, NotRun{Test: TestMapping, Reason: mnr})
	}
	if mapping == "" && nat {
		// Plain STUN servers can still tell the mapping apart.
		var dependent bool
		mapping, dependent = mappingAcrossServers(d.primary, m1, others)
		symmetricByServers = dependent && mapping == ""
		if mapping != "" || dependent {
			p.NotRun = slices.DeleteFunc(p.NotRun, func(n NotRun) bool { return n.Test == TestMapping })
		}
		if dependent && mapping == "" {
			p.NotRun = append(p.NotRun, NotRun{Test: TestMapping, Reason: "mappings differ across servers, but no server pair differs only in port to tell address-dependent from address-and-port-dependent"})
		}
	}
	p.Mapping = mapping
	return symmetricByServers
}

// filtering classifies the filtering. Silence from the alternate address
// only means filtering if that address can answer at all: the mapping
// tests, which open the NAT towards it, are the control.
func (d *discovery) filtering(p *Profile, res *planResults) {
	altDead := d.other.IsValid() && errors.Is(res.mapping[0].err, errTimeout) && errors.Is(res.mapping[1].err, errTimeout)
	if altDead {
		p.NotRun = append(p.NotRun, NotRun{Test: TestFiltering, Reason: fmt.Sprintf("the server's alternate address %s never answered, so silence proves nothing", d.other)})
	}
	if d.other.IsValid() && !altDead {
		f, reason := classifyFiltering(res.filtering[0], res.filtering[1], res.filtering[2])
		p.Filtering = f
		if reason != "" {
			p.NotRun = append(p.NotRun, NotRun{Test: TestFiltering, Reason: reason})
		}
	}
}

func hairpinning(p *Profile, res *planResults) {
	h := res.hairpin
	switch {
	case h == nil:
	case h.err == nil:
		p.Hairpinning = Yes
	case errors.Is(h.err, errTimeout):
		p.Hairpinning = No
	default:
		p.NotRun = append(p.NotRun, NotRun{Test: TestHairpinning, Reason: h.err.Error()})
	}
}

func (d *discovery) allocation(p *Profile, res *planResults) {
	if d.opts.AllocSamples <= 0 {
		return
	}
	var samples []allocSample
	for _, r := range res.alloc {
		if r.err == nil {
			samples = append(samples, allocSample{local: r.local.Port(), mapped: r.mapped.Port()})
		}
	}
	if pa, reason := classifyAllocation(samples); pa != nil {
		p.PortAllocation = pa
	} else {
		p.NotRun = append(p.NotRun, NotRun{Test: TestPortAllocation, Reason: reason})
	}
}

// localAddr is the address of sock on this host: the socket is bound to
// the wildcard, so take the IP the route to the server uses, or the mapped
// IP if it is one of ours (no NAT).
func (d *discovery) localAddr(sockAddr, mapped, server netip.AddrPort) netip.AddrPort {
	port := sockAddr.Port()
	ifaceIPs := d.interfaceIPs()
	if slices.Contains(ifaceIPs, mapped.Addr()) {
		return netip.AddrPortFrom(mapped.Addr(), port)
	}
	if c, err := d.opts.Net.Dial(d.opts.Family.udp(), server.String()); err == nil {
		a := netaddr.AddrPort(c.LocalAddr()).Addr()
		_ = c.Close() // never used to send
		if a.IsValid() && !a.IsUnspecified() {
			return netip.AddrPortFrom(a, port)
		}
	}
	for _, ip := range ifaceIPs {
		if !ip.IsLoopback() {
			return netip.AddrPortFrom(ip, port)
		}
	}
	return netip.AddrPortFrom(d.opts.Family.unspecified(), port)
}

func (d *discovery) interfaceIPs() []netip.Addr {
	var out []netip.Addr
	prefixes := netaddr.Prefixes(d.opts.Net)
	if d.opts.Family == IPv6 {
		prefixes = netaddr.Prefixes6(d.opts.Net)
	}
	for _, p := range prefixes {
		out = append(out, p.Addr())
	}
	return out
}

// planResults holds the plan's answers, one field per probe.
type planResults struct {
	mu        sync.Mutex
	mapping   [2]probeResult // tests II and III
	filtering [3]probeResult // tests I, II and III
	hairpin   *probeResult   // nil when the plan has no hairpin test
	alloc     []probeResult  // the port allocation samples, in order
}

func newPlanResults(plan []Probe) *planResults {
	r := &planResults{}
	for _, pr := range plan {
		if pr.ID == Hairpin {
			r.hairpin = &probeResult{}
		}
		if i, ok := pr.ID.Alloc(); ok {
			r.alloc = append(r.alloc, make([]probeResult, max(i+1-len(r.alloc), 0))...)
		}
	}
	return r
}

// slot is where id's result lives; nil for a probe the plan lacks.
func (r *planResults) slot(id ProbeID) *probeResult {
	switch id {
	case MappingII, MappingIII:
		return &r.mapping[id-MappingII]
	case FilteringI, FilteringII, FilteringIII:
		return &r.filtering[id-FilteringI]
	case Hairpin:
		return r.hairpin
	}
	if i, ok := id.Alloc(); ok && i < len(r.alloc) {
		return &r.alloc[i]
	}
	return nil
}

func (r *planResults) set(id ProbeID, v probeResult) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if p := r.slot(id); p != nil {
		*p = v
	}
}

// rtts are the RTTs of the probes answered so far.
func (r *planResults) rtts() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []time.Duration
	for _, p := range append(append(append([]probeResult{}, r.mapping[:]...), r.filtering[:]...), r.alloc...) {
		if p.err == nil && p.rtt > 0 {
			out = append(out, p.rtt)
		}
	}
	return out
}

func (r *planResults) get(id ProbeID) probeResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	if p := r.slot(id); p != nil {
		return *p
	}
	return probeResult{}
}

// planSync orders the plan's probes: done closes when a probe has its
// result, sent after its first transmission (or when it never sends).
type planSync struct {
	done  map[ProbeID]chan struct{}
	sentC map[ProbeID]chan struct{}
	sent  map[ProbeID]func()
}

func newPlanSync(plan []Probe) planSync {
	ps := planSync{done: map[ProbeID]chan struct{}{}, sentC: map[ProbeID]chan struct{}{}, sent: map[ProbeID]func(){}}
	for _, pr := range plan {
		ps.done[pr.ID] = make(chan struct{})
		c := make(chan struct{})
		ps.sentC[pr.ID], ps.sent[pr.ID] = c, sync.OnceFunc(func() { close(c) })
	}
	return ps
}

// runPlan runs every probe concurrently, honouring After and SentAfter.
// A probe that must be answered retransmits until positiveBudget; one
// whose silence is a result (Negative) waits for awaitSilence's verdict.
func (d *discovery) runPlan(ctx context.Context, plan []Probe, self netip.AddrPort) *planResults {
	ps := newPlanSync(plan)
	res := newPlanResults(plan)
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// A positive filtering-II (endpoint-independent) decides filtering:
	// filtering-III need not wait out its negative timeout.
	fctx, fcancel := context.WithCancel(pctx)
	defer fcancel()
	var wg sync.WaitGroup
	answered := make(chan struct{}) // closed when every positive probe is done
	wg.Go(func() {
		for _, pr := range plan {
			if !pr.ID.Negative() {
				<-ps.done[pr.ID]
			}
		}
		close(answered)
	})
	for _, pr := range plan {
		wg.Go(func() {
			defer close(ps.done[pr.ID])
			defer ps.sent[pr.ID]() // also when it never got to send
			if pr.After != noProbe {
				<-ps.done[pr.After]
				if prev := res.get(pr.After); prev.err != nil {
					res.set(pr.ID, probeResult{err: fmt.Errorf("skipped: %s failed: %w", pr.After, prev.err)})
					return
				}
			}
			c := pctx
			if pr.ID == FilteringIII {
				c = fctx
			}
			sch := positiveSchedule(d.rtt)
			if pr.ID.Negative() {
				sch = negativeSchedule(d.rtt)
				var silence context.CancelCauseFunc
				c, silence = context.WithCancelCause(c)
				defer silence(nil) // ends awaitSilence
				wg.Go(func() { d.awaitSilence(c, ps.sentC[pr.ID], answered, res, silence) })
			}
			sch.sent = ps.sent[pr.ID]
			if pr.SentAfter != noProbe {
				sch.gate = ps.sentC[pr.SentAfter]
			}
			if i, ok := pr.ID.Alloc(); ok && i == d.opts.AllocSamples-1 {
				sent := sch.sent
				sch.sent = func() { sent(); d.openGate() }
			}
			r := d.probe(c, pr, self, sch)
			if r.err != nil && errors.Is(context.Cause(c), errSilence) {
				r.err = errTimeout
			}
			if pr.ID == FilteringII && r.err == nil {
				fcancel()
			}
			res.set(pr.ID, r)
		})
	}
	wg.Wait()
	return res
}

// errSilence ends a negative probe whose silence has become a result.
var errSilence = errors.New("silence long enough to be a result")

// awaitSilence calls silence once a negative probe's silence means
// something: negativeAttempts waits after its first transmission (as
// before the plan's answers came: from test I's RTT, or their median if
// that is shorter, so one slow first packet while a neighbour or
// conntrack entry was being made does not stretch it), and one wait
// (from the median RTT of test I and the plan's answers) after every
// probe that must be answered is done. Those travel the same path at the
// same time, so when the machine got loaded after test I their answers
// are late too, and the wait grows with them.
func (d *discovery) awaitSilence(ctx context.Context, sent, answered <-chan struct{}, res *planResults, silence context.CancelCauseFunc) {
	select {
	case <-sent:
	case <-ctx.Done():
		return
	}
	sentAt := time.Now()
	select {
	case <-answered:
	case <-ctx.Done():
		return
	}
	rtt := medianRTT(append(res.rtts(), d.rtt))
	attempts := negativeAttempts * rttWait(min(rtt, d.rtt))
	t := time.NewTimer(max(time.Until(sentAt.Add(attempts)), rttWait(rtt)))
	defer t.Stop()
	select {
	case <-t.C:
		silence(errSilence)
	case <-ctx.Done():
	}
}

// medianRTT is the median of rtts (not empty).
func medianRTT(rtts []time.Duration) time.Duration {
	slices.Sort(rtts)
	return rtts[len(rtts)/2]
}

func (d *discovery) probe(ctx context.Context, pr Probe, self netip.AddrPort, sch schedule) probeResult {
	s, err := d.socket(pr.Socket)
	if err != nil {
		return probeResult{err: err}
	}
	recv := s
	var to netip.AddrPort
	switch pr.To {
	case ToPrimary:
		to = d.primary
	case ToAltIP:
		to = netip.AddrPortFrom(d.other.Addr(), d.primary.Port())
	case ToOther:
		to = d.other
	case ToSelf:
		to = d.via(self)
		if recv, err = d.socket(SockMapping); err != nil {
			return probeResult{err: err}
		}
	}
	var setters []stun.Setter
	if pr.Change != 0 {
		setters = append(setters, stuntx.ChangeRequest(pr.Change))
	}
	pk, _, err := s.transact(ctx, recv, to, sch, setters...)
	if err != nil {
		d.log.Debug("probe", "name", pr.ID, "to", to, "err", err)
		return probeResult{err: err, local: s.local}
	}
	r := probeResult{local: s.local, rtt: pk.RTT}
	if pr.To != ToSelf {
		m, ok := stuntx.Mapped(pk.Msg)
		if !ok {
			return probeResult{err: errors.New("response without a mapped address"), local: s.local}
		}
		r.mapped = m
	}
	d.log.Debug("probe", "name", pr.ID, "to", to, "from", pk.From, "mapped", r.mapped)
	return r
}

// classifyMapping applies RFC 5780 §4.3. reason says why it is undetermined.
func classifyMapping(nat bool, m1 netip.AddrPort, r2, r3 probeResult, rfc5780 bool) (Behavior, string) {
	if !nat {
		return EndpointIndependent, "" // no translation: nothing depends on the endpoint
	}
	if !rfc5780 {
		return "", ""
	}
	if r2.err != nil {
		return "", "mapping test II: " + r2.err.Error()
	}
	if r2.mapped == m1 {
		return EndpointIndependent, ""
	}
	if r3.err != nil {
		return "", "mapping test III: " + r3.err.Error()
	}
	if r3.mapped == r2.mapped {
		return AddressDependent, ""
	}
	return AddressAndPortDependent, ""
}

type serverMapping struct {
	server, mapped netip.AddrPort
}

// mappingAcrossServers infers the mapping from plain STUN servers: the same
// mapping towards another IP is endpoint-independent; a different one is
// dependent, and a server on the same IP but another port tells which.
// dependent reports a known non-EIM mapping even when b is "".
func mappingAcrossServers(primary, m1 netip.AddrPort, others []serverMapping) (b Behavior, dependent bool) {
	var sawOtherIP, differsByIP, samePortPair, differsByPort bool
	for _, o := range others {
		switch {
		case o.server.Addr() != primary.Addr():
			sawOtherIP = true
			if o.mapped != m1 {
				differsByIP = true
			}
		case o.server.Port() != primary.Port():
			samePortPair = true
			if o.mapped != m1 {
				differsByPort = true
			}
		}
	}
	switch {
	case differsByPort:
		return AddressAndPortDependent, true
	case differsByIP && samePortPair:
		return AddressDependent, true
	case differsByIP:
		return "", true
	case sawOtherIP:
		return EndpointIndependent, false
	}
	return "", false
}

// classifyFiltering applies RFC 5780 §4.4.
func classifyFiltering(r1, r2, r3 probeResult) (Behavior, string) {
	if r1.err != nil {
		return "", "filtering test I: " + r1.err.Error()
	}
	if r2.err == nil {
		return EndpointIndependent, ""
	}
	var se *ServerError
	if errors.As(r2.err, &se) {
		return "", "server refused CHANGE-REQUEST: " + se.Error()
	}
	if !errors.Is(r2.err, errTimeout) {
		return "", "filtering test II: " + r2.err.Error()
	}
	if r3.err == nil {
		return AddressDependent, ""
	}
	if errors.As(r3.err, &se) {
		return "", "server refused CHANGE-REQUEST: " + se.Error()
	}
	if !errors.Is(r3.err, errTimeout) {
		return "", "filtering test III: " + r3.err.Error()
	}
	return AddressAndPortDependent, ""
}

type allocSample struct{ local, mapped uint16 }

// minAllocSamples is the fewest samples that can show a pattern: two
// deltas agreeing is the least evidence of a step.
const minAllocSamples = 3

// classifyAllocation finds the pattern: preserving if most mappings kept
// the local port; sequential if most gaps between the sorted external
// ports agree (sorting undoes packets the NAT saw out of order, and the
// mode tolerates mappings of other traffic in between); else random.
func classifyAllocation(s []allocSample) (*PortAllocation, string) {
	if len(s) < minAllocSamples {
		return nil, fmt.Sprintf("only %d of the port allocation samples were answered", len(s))
	}
	pa := &PortAllocation{}
	kept := 0
	ports := make([]int, 0, len(s))
	down := 0 // consecutive samples whose port went down: a descending allocator
	for i, x := range s {
		pa.Samples = append(pa.Samples, int(x.mapped))
		ports = append(ports, int(x.mapped))
		if x.local == x.mapped {
			kept++
		}
		if i > 0 && x.mapped < s[i-1].mapped {
			down++
		}
	}
	if 2*kept > len(s) {
		pa.Pattern = Preserving
		return pa, ""
	}
	slices.Sort(ports)
	counts := map[int]int{}
	best, bestN := 0, 0
	for i := 1; i < len(ports); i++ {
		gap := ports[i] - ports[i-1]
		counts[gap]++
		if n := counts[gap]; n > bestN || (n == bestN && gap < best) {
			best, bestN = gap, n
		}
	}
	if best != 0 && 2*bestN >= len(ports)-1 {
		pa.Pattern, pa.Step = Sequential, best
		if 2*down > len(s)-1 {
			pa.Step = -best
		}
		return pa, ""
	}
	pa.Pattern = Random
	return pa, ""
}
