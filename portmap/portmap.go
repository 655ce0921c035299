// Package portmap asks the gateway in front of a host for a port mapping,
// over the three protocols home routers speak: UPnP-IGD (SSDP discovery and
// SOAP control), NAT-PMP (RFC 6886) and PCP (RFC 6887, MAP opcode). A
// mapping makes the host reachable at a known external address with
// endpoint-independent filtering, which turns pairs that cannot be punched
// (symmetric × symmetric) into direct ones.
//
// Every socket comes from a transport.Net, so the same code runs on the
// host's stack and inside the kernel lab's namespaces. The protocols are
// small enough that natlab speaks them itself: jackpal/go-nat-pmp dials
// with package net and has no seam for a transport.Net, huin/goupnp's SSDP
// search does the same, and neither speaks PCP.
package portmap

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/transport/v4"

	"github.com/natlab/natlab/internal/millis"
	"github.com/natlab/natlab/internal/netaddr"
)

// Protocol names a port-mapping protocol; the strings are part of the JSON
// schema.
type Protocol string

// The three protocols.
const (
	UPnP   Protocol = "upnp-igd"
	NATPMP Protocol = "nat-pmp"
	PCP    Protocol = "pcp"
)

// Protocols lists the protocols in the order Map tries them: PCP first
// (the newest, and what a carrier-grade NAT speaks), then NAT-PMP (one
// datagram each way), then UPnP-IGD (discovery, HTTP and SOAP).
var Protocols = []Protocol{PCP, NATPMP, UPnP}

// Timeouts, each with why it has that value.
const (
	// DefaultProbeTimeout bounds Probe: a gateway on the LAN answers in
	// milliseconds, NAT-PMP's retransmissions at 250 and 500 ms fit three
	// tries, and a host without a port-mapping gateway must learn "none"
	// quickly.
	DefaultProbeTimeout = 1500 * time.Millisecond
	// DefaultMapTimeout bounds one Map or Unmap: the same round trips as a
	// probe, plus UPnP's discovery when it has not run yet.
	DefaultMapTimeout = 2 * time.Second
	// cleanupTimeout bounds the removal of a mapping during cleanup, which
	// runs with a fresh context because the caller's may have ended.
	cleanupTimeout = 2 * time.Second
	// DefaultLifetime is the lease asked for by OpenMapped: long enough for
	// a probe's punch and measurements, short enough that a crashed run
	// leaves nothing behind for long. PCP servers round it up to their
	// minimum (120 s for miniupnpd).
	DefaultLifetime = 2 * time.Minute
)

// Options configure a Client.
type Options struct {
	// Net opens every socket: stdnet for the host, a lab host's Net.
	Net transport.Net
	// Gateway is the router to ask; when invalid, the first address of
	// each private prefix on Net's interfaces is tried (10.0.0.1 for a
	// host at 10.0.0.2/24). DefaultGateway reads the host's routing table.
	Gateway netip.Addr
	// Timeout bounds Probe (DefaultProbeTimeout when 0).
	Timeout time.Duration
	// TestMap makes Probe map a throwaway port on every protocol that
	// answers and delete it at once, to report the external address and
	// port each protocol really gives.
	TestMap bool
	// Logger receives debug notes; nil discards them.
	Logger *slog.Logger
	// Beyond is an address past the gateway (the STUN server the caller
	// talks to anyway): a TTL-1 datagram toward it measures the gateway's
	// round trip, which then bounds the wait for a silent gateway.
	// Without it the wait is Timeout.
	Beyond netip.AddrPort
}

// Result is what one protocol answered.
type Result struct {
	Protocol Protocol `json:"protocol"`
	// Available says the gateway speaks the protocol.
	Available bool `json:"available"`
	// External is the external address the gateway reported (NAT-PMP and
	// UPnP report it directly; PCP only through a test mapping).
	External netip.Addr `json:"external,omitzero"`
	// TestMapping is the throwaway mapping made with Options.TestMap,
	// already deleted.
	TestMapping netip.AddrPort `json:"test_mapping,omitzero"`
	// Location is UPnP's device description URL.
	Location string `json:"location,omitempty"`
	// RTTMillis is the time to the first answer.
	RTTMillis float64 `json:"rtt_ms,omitempty"`
	// Error says why the protocol is not available (silence, a refusal).
	Error string `json:"error,omitempty"`
}

// Report is the result of Probe: the JSON object `natlab check` shows under
// "port_mapping".
type Report struct {
	// Gateway is the router that was asked; invalid when none was found.
	Gateway netip.Addr `json:"gateway,omitzero"`
	// Local is this host's address toward the gateway.
	Local netip.Addr `json:"local,omitzero"`
	// Protocols has one entry per protocol, in Protocols order.
	Protocols []Result `json:"protocols"`
	// DurationMillis is the wall time of the probe.
	DurationMillis float64 `json:"duration_ms"`
	// Error is set when no gateway could be asked at all.
	Error string `json:"error,omitempty"`
	// Inbound is Check's test of a real mapping from the internet side;
	// nil when not run (Probe, or no protocol answered).
	Inbound *Inbound `json:"inbound,omitempty"`
}

// Available lists the protocols the gateway speaks, in Protocols order.
func (r Report) Available() []Protocol {
	var out []Protocol
	for _, p := range r.Protocols {
		if p.Available {
			out = append(out, p.Protocol)
		}
	}
	return out
}

// Any reports whether at least one protocol answered.
func (r Report) Any() bool { return len(r.Available()) > 0 }

// Summary is one line for people: "none" or the protocols that answered.
func (r Report) Summary() string {
	av := r.Available()
	if len(av) == 0 {
		return "none"
	}
	s := make([]string, len(av))
	for i, p := range av {
		s[i] = string(p)
	}
	return strings.Join(s, ", ")
}

// Mapping is a port mapping held on the gateway. Delete it with
// Client.Unmap.
type Mapping struct {
	Protocol Protocol `json:"protocol"`
	// Internal is this host's socket the mapping forwards to.
	Internal netip.AddrPort `json:"internal"`
	// External is where the internet reaches it.
	External netip.AddrPort `json:"external"`
	// Lifetime is the lease the gateway granted.
	Lifetime time.Duration `json:"-"`

	nonce [pcpNonceSize]byte // PCP: the nonce that owns the mapping
}

func (m Mapping) String() string {
	return fmt.Sprintf("%s %v → %v (%v)", m.Protocol, m.External, m.Internal, m.Lifetime)
}

// ErrNoGateway is returned when no gateway address is known.
var ErrNoGateway = errors.New("no gateway address")

// ErrUnavailable is returned by Map when the gateway does not speak the
// protocol (or does not answer).
var ErrUnavailable = errors.New("port-mapping protocol not available")

// Client talks to one gateway. It is safe for concurrent use.
type Client struct {
	net     transport.Net
	gw      netip.Addr
	local   netip.Addr
	timeout time.Duration
	testMap bool
	log     *slog.Logger
	beyond  netip.AddrPort
	gwRTT   atomic.Int64 // the gateway's round trip in ns, once measured

	mu   sync.Mutex
	igd  *igdService // UPnP control point, once discovered
	last Report
}

// NewClient finds the gateway (Options.Gateway or a guess from the
// interfaces) and this host's address toward it.
func NewClient(o Options) (*Client, error) {
	if o.Net == nil {
		return nil, errors.New("portmap: Options.Net is nil")
	}
	c := &Client{net: o.Net, gw: o.Gateway, timeout: cmp.Or(o.Timeout, DefaultProbeTimeout), testMap: o.TestMap, log: o.Logger, beyond: o.Beyond}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if !c.gw.IsValid() {
		gws := GuessGateways(o.Net)
		if len(gws) == 0 {
			return nil, ErrNoGateway
		}
		c.gw = gws[0]
	}
	c.gw = c.gw.Unmap()
	if !c.gw.Is4() {
		return nil, fmt.Errorf("gateway %v: only IPv4 gateways are supported", c.gw)
	}
	local, err := localAddrToward(o.Net, c.gw)
	if err != nil {
		return nil, err
	}
	c.local = local
	return c, nil
}

// Gateway is the router this client asks.
func (c *Client) Gateway() netip.Addr { return c.gw }

// Local is this host's address toward the gateway.
func (c *Client) Local() netip.Addr { return c.local }

// localAddrToward returns the source address the stack picks toward gw: a
// connected UDP socket sends nothing but has its local address chosen.
func localAddrToward(n transport.Net, gw netip.Addr) (netip.Addr, error) {
	conn, err := n.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(gw, pmpPort)))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("route to gateway %v: %w", gw, err)
	}
	defer conn.Close()
	ua, ok := conn.LocalAddr().(*net.UDPAddr)
	if !ok {
		return netip.Addr{}, fmt.Errorf("route to gateway %v: local address %v", gw, conn.LocalAddr())
	}
	a, _ := netip.AddrFromSlice(ua.IP)
	a = a.Unmap()
	if !a.IsValid() || a.IsUnspecified() {
		return netip.Addr{}, fmt.Errorf("route to gateway %v: no local address", gw)
	}
	return a, nil
}

// privateV4 are the prefixes a LAN behind a home router uses.
var privateV4 = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("100.64.0.0/10"),
}

// GuessGateways returns, for every private IPv4 prefix on n's interfaces,
// its first address (the usual router address), skipping the host's own.
func GuessGateways(n transport.Net) []netip.Addr {
	var out []netip.Addr
	for _, p := range netaddr.Prefixes(n) {
		if p.Bits() >= 31 || p.Addr().IsLoopback() {
			continue
		}
		if !slices.ContainsFunc(privateV4, func(q netip.Prefix) bool { return q.Contains(p.Addr()) }) {
			continue
		}
		first := p.Masked().Addr().Next()
		if first != p.Addr() && !slices.Contains(out, first) {
			out = append(out, first)
		}
	}
	return out
}

// Probe asks the gateway (from o, or guessed) which protocols it speaks.
// It returns within o.Timeout (DefaultProbeTimeout) plus, with TestMap,
// one mapping round trip per protocol; without a gateway it says none.
func Probe(ctx context.Context, o Options) Report {
	start := time.Now()
	c, err := NewClient(o)
	if err != nil {
		r := Report{Error: err.Error()}
		for _, p := range Protocols {
			r.Protocols = append(r.Protocols, Result{Protocol: p, Error: "not checked: " + err.Error()})
		}
		r.DurationMillis = millis.Of(time.Since(start))
		return r
	}
	return c.Probe(ctx)
}

// Probe asks the gateway which protocols it speaks, all three at once.
func (c *Client) Probe(ctx context.Context) Report {
	start := time.Now()
	tctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	pctx, bound := context.WithCancelCause(tctx)
	defer bound(nil)
	stopBound := c.boundSilence(pctx, bound, start)
	r := Report{Gateway: c.gw, Local: c.local, Protocols: make([]Result, len(Protocols))}
	var wg sync.WaitGroup
	for i, p := range Protocols {
		wg.Go(func() {
			t0 := time.Now()
			res := Result{Protocol: p}
			var err error
			switch p {
			case NATPMP:
				res.External, err = c.pmpExternal(pctx)
			case PCP:
				err = c.pcpAnnounce(pctx)
			case UPnP:
				var s *igdService
				s, err = c.discover(pctx)
				if err == nil {
					res.Location = s.location
					res.External, err = s.externalIP(pctx, c.net)
				}
			}
			if err != nil {
				res.Error = err.Error()
			} else {
				res.Available = true
				res.RTTMillis = millis.Of(time.Since(t0))
			}
			r.Protocols[i] = res
		})
	}
	wg.Wait()
	stopBound()
	if c.testMap {
		c.testMappings(ctx, &r)
	}
	r.DurationMillis = millis.Of(time.Since(start))
	c.mu.Lock()
	c.last = r
	c.mu.Unlock()
	return r
}

// testMappings maps a throwaway socket's port on each available protocol
// and deletes the mapping again.
func (c *Client) testMappings(ctx context.Context, r *Report) {
	conn, err := c.net.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		return
	}
	defer conn.Close()
	port := localPort(conn)
	for i := range r.Protocols {
		res := &r.Protocols[i]
		if !res.Available {
			continue
		}
		m, err := c.Map(ctx, res.Protocol, port, time.Minute)
		if err != nil {
			res.Error = "test mapping: " + err.Error()
			continue
		}
		res.TestMapping = m.External
		if !res.External.IsValid() {
			res.External = m.External.Addr()
		}
		// Deleted even when ctx has ended meanwhile.
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		if err := c.Unmap(uctx, m); err != nil {
			res.Error = "delete test mapping: " + err.Error()
		}
		cancel()
	}
}

// Map asks the gateway, over proto, to forward UDP arriving at an external
// port to internalPort on this host for lifetime (rounded to seconds, at
// least one). The gateway may grant another external port or lifetime.
// The caller must Unmap the mapping when done.
func (c *Client) Map(ctx context.Context, proto Protocol, internalPort uint16, lifetime time.Duration) (Mapping, error) {
	ctx, cancel := context.WithTimeout(ctx, DefaultMapTimeout)
	defer cancel()
	secs := max(uint32(lifetime/time.Second), 1)
	m := Mapping{Protocol: proto, Internal: netip.AddrPortFrom(c.local, internalPort)}
	var err error
	switch proto {
	case NATPMP:
		err = c.pmpMap(ctx, &m, internalPort, secs)
	case PCP:
		err = c.pcpMap(ctx, &m, internalPort, secs)
	case UPnP:
		var s *igdService
		if s, err = c.discover(ctx); err == nil {
			err = s.addPortMapping(ctx, c.net, &m, c.local, internalPort, secs)
		}
	default:
		return Mapping{}, fmt.Errorf("unknown port-mapping protocol %q", proto)
	}
	if err != nil {
		return Mapping{}, fmt.Errorf("%s map UDP port %d: %w", proto, internalPort, err)
	}
	c.log.Debug("port mapped", "mapping", m.String())
	return m, nil
}

// Unmap deletes a mapping made by Map.
func (c *Client) Unmap(ctx context.Context, m Mapping) error {
	ctx, cancel := context.WithTimeout(ctx, DefaultMapTimeout)
	defer cancel()
	var err error
	switch m.Protocol {
	case NATPMP:
		err = c.pmpUnmap(ctx, m)
	case PCP:
		err = c.pcpUnmap(ctx, m)
	case UPnP:
		var s *igdService
		if s, err = c.discover(ctx); err == nil {
			err = s.deletePortMapping(ctx, c.net, m.External.Port())
		}
	default:
		return fmt.Errorf("unknown port-mapping protocol %q", m.Protocol)
	}
	if err != nil {
		return fmt.Errorf("%s unmap %v: %w", m.Protocol, m.External, err)
	}
	c.log.Debug("port unmapped", "mapping", m.String())
	return nil
}

// MapAny tries each protocol in Protocols order (only those the last
// Probe found available, if one ran) and returns the first mapping made.
func (c *Client) MapAny(ctx context.Context, internalPort uint16, lifetime time.Duration) (Mapping, error) {
	c.mu.Lock()
	last := c.last
	c.mu.Unlock()
	try := Protocols
	if len(last.Protocols) > 0 {
		try = last.Available()
		if len(try) == 0 {
			return Mapping{}, fmt.Errorf("gateway %v: %w", c.gw, ErrUnavailable)
		}
	}
	var errs []error
	for _, p := range try {
		m, err := c.Map(ctx, p, internalPort, lifetime)
		if err == nil {
			return m, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return Mapping{}, errors.Join(errs...)
}

// OpenMapped opens a UDP socket on n, maps its port on the gateway (gw, or
// guessed when invalid) over the first protocol that works, and returns the
// socket, the mapping and a cleanup that deletes the mapping (bounded,
// with its own context) and closes the socket; cleanup is safe to call
// after the socket was handed on and closed, and more than once. On error
// nothing is left open or mapped.
func OpenMapped(ctx context.Context, n transport.Net, gw netip.Addr, lifetime time.Duration) (net.PacketConn, Mapping, func(), error) {
	c, err := NewClient(Options{Net: n, Gateway: gw})
	if err != nil {
		return nil, Mapping{}, nil, err
	}
	if r := c.Probe(ctx); !r.Any() {
		return nil, Mapping{}, nil, fmt.Errorf("gateway %v: %w", c.gw, ErrUnavailable)
	}
	conn, err := n.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		return nil, Mapping{}, nil, fmt.Errorf("open UDP socket: %w", err)
	}
	m, err := c.MapAny(ctx, localPort(conn), cmp.Or(lifetime, DefaultLifetime))
	if err != nil {
		_ = conn.Close()
		return nil, Mapping{}, nil, err
	}
	var once sync.Once
	cleanup := func() {
		once.Do(func() {
			cctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
			defer cancel()
			if err := c.Unmap(cctx, m); err != nil {
				c.log.Debug("cleanup", "err", err)
			}
			_ = conn.Close()
		})
	}
	return conn, m, cleanup, nil
}

func localPort(c net.PacketConn) uint16 {
	if ua, ok := c.LocalAddr().(*net.UDPAddr); ok {
		return uint16(ua.Port)
	}
	ap, _ := netip.ParseAddrPort(c.LocalAddr().String())
	return ap.Port()
}
