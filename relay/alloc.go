// Package relay measures what a TURN relay costs: it allocates a relayed
// address over UDP, TCP or TLS (pion/turn's client), and runs a symmetric
// RTT and throughput measurement between two peers over any
// net.PacketConn — a relayed one or a direct path — so the two compare.
package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/logging"
	"github.com/pion/transport/v4"
	"github.com/pion/turn/v4"
)

// Transport is how the client reaches the TURN server. The relayed
// address is UDP in every case.
type Transport string

// Transports; the strings are part of the JSON schema.
const (
	UDP Transport = "udp"
	TCP Transport = "tcp"
	TLS Transport = "tls"
)

// Timing of an allocation, each with why.
const (
	// AllocTimeout bounds connecting, the TLS handshake and the two
	// Allocate round trips (the first draws the 401 with the nonce):
	// even a slow mobile path answers within a few seconds, and a relay
	// that takes longer is no fallback anyone wants.
	AllocTimeout = 10 * time.Second
	// PermitTimeout bounds one CreatePermission round trip, retransmissions
	// included.
	PermitTimeout = 5 * time.Second
	// clientRTO is the first retransmission interval of the TURN client:
	// 100 ms, as natlab's STUN client, rather than pion's 200 ms, so a lost
	// request costs little of the bounds above.
	clientRTO = 100 * time.Millisecond
)

// AllocOptions configure Allocate.
type AllocOptions struct {
	// Net opens the sockets (the host's stack or a lab host's Net).
	Net transport.Net
	// Server is the TURN server's host:port.
	Server    string
	Transport Transport
	Username  string
	Password  string
	// Realm is only a hint: the server's 401 names the realm used.
	Realm string
	// TLSConfig for TLS; nil verifies the server against the system roots
	// with the server's host name.
	TLSConfig *tls.Config
	// Timeout bounds the whole allocation (AllocTimeout if zero).
	Timeout time.Duration
	// Family is the relayed address's family, asked for with
	// REQUESTED-ADDRESS-FAMILY (RFC 6156); IPv6 also reaches the server
	// over IPv6 (a name resolves to its IPv6 address). "" sends no such
	// attribute, and the server relays in its default family: natlab
	// serve in the family the client reached it in, an RFC 6156 server
	// (coturn) IPv4. So an IPv6-only host behind NAT64 reaching an IPv4
	// relay at its synthesised address leaves it "".
	Family Family
}

// v6 reports whether the server is reached over IPv6.
func (o AllocOptions) v6() bool { return o.Family == IPv6 || is6(o.Server) }

// requested is the REQUESTED-ADDRESS-FAMILY to send, 0 for none.
func (o AllocOptions) requested() byte {
	switch {
	case o.Family == IPv4:
		return familyIPv4
	case o.Family == IPv6:
		return familyIPv6
	}
	return 0
}

// Allocation is a relayed transport address on a TURN server.
type Allocation struct {
	// Conn sends to and receives from peers through the relay. Peers
	// need a permission first (Permit, or implicitly on first write).
	Conn net.PacketConn
	// Relayed is the relayed transport address peers send to.
	Relayed netip.AddrPort
	// Transport is how this client reaches the server.
	Transport Transport
	// AllocTime is from the first packet (or TCP SYN) to the relayed
	// address, handshake and authentication included.
	AllocTime time.Duration

	client *turn.Client
	base   net.PacketConn
	once   sync.Once
	err    error
}

// Allocate connects to the TURN server and allocates a relayed UDP
// address, bounded by ctx and o.Timeout.
func Allocate(ctx context.Context, o AllocOptions) (*Allocation, error) {
	if o.Net == nil {
		return nil, errors.New("relay: AllocOptions.Net is nil")
	}
	if o.Transport == "" {
		o.Transport = UDP
	}
	if o.Timeout <= 0 {
		o.Timeout = AllocTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	start := time.Now()
	if o.Family != "" && o.Family != IPv4 && o.Family != IPv6 {
		return nil, fmt.Errorf("relay family %q: want ipv4 or ipv6", o.Family)
	}
	base, err := dial(ctx, o)
	if err != nil {
		return nil, err
	}
	conn := base
	if f := o.requested(); f != 0 {
		conn = &familyConn{PacketConn: base, family: f, password: o.Password}
	}
	logs := logging.NewDefaultLoggerFactory()
	logs.DefaultLogLevel = logging.LogLevelDisabled
	client, err := turn.NewClient(&turn.ClientConfig{
		TURNServerAddr: o.Server, Username: o.Username, Password: o.Password, Realm: o.Realm,
		Conn: conn, Net: familyNet{o.Net, o.v6()}, LoggerFactory: logs, RTO: clientRTO,
	})
	if err != nil {
		_ = base.Close()
		return nil, fmt.Errorf("turn client for %s: %w", o.Server, err)
	}
	if err := client.Listen(); err != nil {
		client.Close()
		_ = base.Close()
		return nil, fmt.Errorf("turn client for %s: %w", o.Server, err)
	}
	type result struct {
		c   net.PacketConn
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := client.Allocate()
		done <- result{c, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		client.Close() // fails the pending transaction, so Allocate returns
		_ = base.Close()
		<-done
		return nil, fmt.Errorf("allocate on %s over %s: %w", o.Server, o.Transport, ctx.Err())
	}
	if r.err != nil {
		client.Close()
		_ = base.Close()
		return nil, fmt.Errorf("allocate on %s over %s: %w", o.Server, o.Transport, r.err)
	}
	a := &Allocation{Conn: r.c, Transport: o.Transport, AllocTime: time.Since(start), client: client, base: base}
	if ua, ok := r.c.LocalAddr().(*net.UDPAddr); ok {
		ap := ua.AddrPort()
		a.Relayed = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	if f := o.requested(); f != 0 && a.Relayed.Addr().Is6() != (f == familyIPv6) {
		// A server that ignores REQUESTED-ADDRESS-FAMILY (pion/turn's
		// does) relays in its own family: not the relay asked for.
		_ = a.Close()
		return nil, fmt.Errorf("allocate on %s over %s: asked for an %s relayed address, got %s", o.Server, o.Transport, familyName(f), a.Relayed)
	}
	return a, nil
}

// dial opens the client's socket to the server: a UDP socket, or a TCP
// (TLS) connection framed as a PacketConn.
func dial(ctx context.Context, o AllocOptions) (net.PacketConn, error) {
	switch o.Transport {
	case UDP:
		network, any := "udp4", "0.0.0.0:0"
		if o.v6() {
			network, any = "udp6", "[::]:0"
		}
		c, err := o.Net.ListenPacket(network, any)
		if err != nil {
			return nil, fmt.Errorf("turn client socket: %w", err)
		}
		return c, nil
	case TCP, TLS:
	default:
		return nil, fmt.Errorf("relay transport %q: want udp, tcp or tls", o.Transport)
	}
	tcpNet := "tcp4"
	if o.v6() {
		tcpNet = "tcp6"
	}
	ra, err := o.Net.ResolveTCPAddr(tcpNet, o.Server)
	if err != nil {
		return nil, fmt.Errorf("turn server %s: %w", o.Server, err)
	}
	type result struct {
		c   net.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := o.Net.DialTCP(tcpNet, nil, ra)
		if err != nil {
			done <- result{nil, err}
			return
		}
		done <- result{c, nil}
	}()
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		go func() { // the dial ends with its own SYN timeout; close what it opens
			if r := <-done; r.c != nil {
				_ = r.c.Close()
			}
		}()
		return nil, fmt.Errorf("connect to %s: %w", o.Server, ctx.Err())
	}
	if r.err != nil {
		return nil, fmt.Errorf("connect to %s over %s: %w", o.Server, o.Transport, r.err)
	}
	c := r.c
	if o.Transport == TLS {
		cfg := o.TLSConfig
		if cfg == nil {
			host, _, _ := net.SplitHostPort(o.Server)
			cfg = &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
		}
		tc := tls.Client(c, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = c.Close()
			return nil, fmt.Errorf("TLS handshake with %s: %w", o.Server, err)
		}
		c = tc
	}
	return turn.NewSTUNConn(c), nil
}

// Permit installs permissions for peers on the relay (one
// CreatePermission), so their first packets are not dropped by the
// server. It is bounded by ctx and PermitTimeout; on timeout the request
// is abandoned until Close.
func (a *Allocation) Permit(ctx context.Context, peers ...netip.AddrPort) error {
	if len(peers) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, PermitTimeout)
	defer cancel()
	addrs := make([]net.Addr, len(peers))
	for i, p := range peers {
		addrs[i] = net.UDPAddrFromAddrPort(p)
	}
	done := make(chan error, 1)
	go func() { done <- a.client.CreatePermission(addrs...) }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("permission for %v: %w", peers, err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("permission for %v: %w", peers, ctx.Err())
	}
}

// Close releases the allocation (a Refresh with lifetime 0, not waited
// for) and closes the sockets. It is safe to call more than once.
func (a *Allocation) Close() error {
	a.once.Do(func() {
		_ = a.Conn.Close() // "already closed" says nothing useful
		a.client.Close()
		a.err = a.base.Close()
		if errors.Is(a.err, net.ErrClosed) {
			a.err = nil
		}
	})
	return a.err
}

// is6 reports whether a server host:port is a literal IPv6 address: the
// relay is then reached, and allocated, over IPv6 (a name resolves to
// IPv4, as before).
func is6(server string) bool {
	ap, err := netip.ParseAddrPort(server)
	return err == nil && ap.Addr().Is6() && !ap.Addr().Is4In6()
}

// familyNet resolves the TURN server in its own family: pion/turn's
// client resolves TURNServerAddr as "udp4", which fails for an IPv6
// literal.
type familyNet struct {
	transport.Net
	v6 bool
}

func (n familyNet) ResolveUDPAddr(network, address string) (*net.UDPAddr, error) {
	if n.v6 && network == "udp4" {
		network = "udp6"
	}
	return n.Net.ResolveUDPAddr(network, address)
}
