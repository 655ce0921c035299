package rendezvous

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/pion/transport/v4"

	"github.com/natlab/natlab/internal/millis"
)

// Client timing, each with why.
const (
	// initialRTO is the first retransmission interval before an RTT is
	// known, as in the STUN client: duplicates cost the server nothing.
	initialRTO = 100 * time.Millisecond
	// maxRTO caps the backoff so a peer waiting for its partner still
	// polls often enough to hear "go" retransmissions promptly.
	maxRTO = 1 * time.Second
	// silenceLimit is how long the server may stay silent before the
	// client gives up: ten retransmissions with backoff, far past any RTT.
	silenceLimit = 5 * time.Second
	// dialTimeout bounds the TCP connect to the server: a SYN lost twice
	// is retried by the kernel within this time.
	dialTimeout = 5 * time.Second
)

// ErrServerSilent means the rendezvous server did not answer at all.
var ErrServerSilent = errors.New("rendezvous server does not answer (down, unreachable, or an old natlab without rendezvous)")

// ServerError is an error the server reported.
type ServerError struct{ Msg string }

func (e *ServerError) Error() string { return "rendezvous: " + e.Msg }

// Mode says how a client enters a pairing.
type Mode string

// Modes: the first peer creates, the second joins, or both meet with a
// pre-shared code.
const (
	Create Mode = TypeCreate
	Join   Mode = TypeJoin
	Meet   Mode = TypeMeet
)

// Peer is the other side of a pairing.
type Peer struct {
	Token string
	Info  json.RawMessage
	// Slot is this peer's place: 1 entered the pairing first, 2 joined
	// it; 0 when the server does not say.
	Slot int
}

// Client is one peer's rendezvous session over its own UDP socket.
type Client struct {
	conn   net.PacketConn
	server net.Addr
	token  string
	code   string
	// Silence is how long the server may stay silent before Pair or Step
	// fail with ErrServerSilent (default 5 s).
	Silence time.Duration

	mu  sync.Mutex
	rtt time.Duration
}

// Dial opens a socket on n for talking to the server at addr (host:port):
// an IPv4 socket for an IPv4 server, an IPv6 one for an IPv6 server (the
// server's own IPv6 address, or its IPv4 address synthesised into a
// NAT64 prefix by an IPv6-only host). A name resolves to IPv4 first.
func Dial(n transport.Net, addr string) (*Client, error) {
	ua, err := resolveServer(n, addr)
	if err != nil {
		return nil, fmt.Errorf("rendezvous server %s: %w", addr, err)
	}
	network, local := "udp4", "0.0.0.0:0"
	if ua.IP.To4() == nil {
		network, local = "udp6", "[::]:0"
	}
	conn, err := n.ListenPacket(network, local)
	if err != nil {
		return nil, fmt.Errorf("rendezvous socket: %w", err)
	}
	tok, err := newToken()
	if err != nil {
		conn.Close()
		return nil, err
	}
	return &Client{conn: conn, server: ua, token: tok, Silence: silenceLimit}, nil
}

// DialTCP connects to the server at addr over TCP, for hosts whose UDP is
// blocked; the protocol is the same, one JSON message per line.
func DialTCP(ctx context.Context, n transport.Net, addr string) (*Client, error) {
	d := n.CreateDialer(&net.Dialer{Timeout: dialTimeout})
	ua, err := resolveServer(n, addr)
	if err != nil {
		return nil, fmt.Errorf("rendezvous server %s: %w", addr, err)
	}
	network := "tcp4"
	if ua.IP.To4() == nil {
		network = "tcp6"
	}
	conn, err := d.Dial(network, ua.String())
	if err != nil {
		return nil, fmt.Errorf("rendezvous server %s over TCP: %w", addr, err)
	}
	tok, err := newToken()
	if err != nil {
		conn.Close()
		return nil, err
	}
	sc := &streamConn{Conn: conn, br: bufio.NewReaderSize(conn, MaxMessage+2)}
	return &Client{conn: sc, server: conn.RemoteAddr(), token: tok, Silence: silenceLimit}, nil
}

// resolveServer resolves addr, an IPv4 address before an IPv6 one: the
// server's rendezvous answers on both families alike.
func resolveServer(n transport.Net, addr string) (*net.UDPAddr, error) {
	if ua, err := n.ResolveUDPAddr("udp4", addr); err == nil {
		return ua, nil
	}
	return n.ResolveUDPAddr("udp6", addr)
}

// Token is this peer's random token (the other peer sees it).
func (c *Client) Token() string { return c.token }

// Code is the normalised pairing code, once Pair was called.
func (c *Client) Code() string { return c.code }

// RTT is the last measured round trip to the server (0 before any).
func (c *Client) RTT() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rtt
}

// Pair enters the pairing with code and info and waits, until ctx ends,
// for the other peer. For Create, waiting is reported through onWait once
// the server has registered the code (so the caller can print it).
func (c *Client) Pair(ctx context.Context, mode Mode, code string, info json.RawMessage, onWait func()) (Peer, error) {
	norm, err := NormalizeCode(code)
	if err != nil {
		return Peer{}, err
	}
	c.code = norm
	waited := false
	req := Message{Type: string(mode), Code: norm, Token: c.token, Info: info}
	m, err := c.exchange(ctx, req, func(m Message) bool {
		if m.Type == TypeWait && !waited {
			waited = true
			if onWait != nil {
				onWait()
			}
		}
		return m.Type == TypePeer
	})
	if err != nil {
		return Peer{}, err
	}
	return Peer{Token: m.Peer, Info: m.Info, Slot: m.Slot}, nil
}

// Step reports this peer ready for step k with data, waits for the other
// peer to be ready too, and returns the other's data for step k. It
// returns when both peers should start step k together.
func (c *Client) Step(ctx context.Context, k int, data any) (json.RawMessage, error) {
	raw, err := json.Marshal(data)
	if err != nil {
		return nil, fmt.Errorf("rendezvous step %d: %w", k, err)
	}
	req := Message{Type: TypeStep, Code: c.code, Token: c.token, Step: k, RTT: millis.Of(c.RTT()), Data: raw}
	m, err := c.exchange(ctx, req, func(m Message) bool { return m.Type == TypeGo && m.Step == k })
	if err != nil {
		return nil, fmt.Errorf("step %d: %w", k, err)
	}
	return m.Data, nil
}

// Close says goodbye (best effort, one datagram) and closes the socket.
func (c *Client) Close() error {
	if c.code != "" {
		if b, err := Encode(Message{Type: TypeBye, Code: c.code, Token: c.token}); err == nil {
			_, _ = c.conn.WriteTo(b, c.server)
		}
	}
	return c.conn.Close()
}

// exchange sends req with retransmissions until done accepts a reply, the
// server reports an error, it stays silent too long, or ctx ends.
func (c *Client) exchange(ctx context.Context, req Message, done func(Message) bool) (Message, error) {
	b, err := EncodeRequest(req)
	if err != nil {
		return Message{}, err
	}
	stop := context.AfterFunc(ctx, func() { _ = c.conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	rto := initialRTO
	if r := c.RTT(); r > 0 {
		rto = max(2*r, 10*time.Millisecond)
	}
	lastHeard := time.Now()
	buf := make([]byte, MaxMessage+1)
	for {
		sent := time.Now()
		measured := false
		if _, err := c.conn.WriteTo(b, c.server); err != nil {
			return Message{}, fmt.Errorf("rendezvous send: %w", err)
		}
		deadline := sent.Add(rto)
		for {
			if ctx.Err() != nil {
				return Message{}, fmt.Errorf("rendezvous: %w", ctx.Err())
			}
			_ = c.conn.SetReadDeadline(deadline)
			n, from, err := c.conn.ReadFrom(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break
				}
				return Message{}, fmt.Errorf("rendezvous receive: %w", err)
			}
			if from.String() != c.server.String() {
				continue // only the server speaks on this socket
			}
			m, err := Decode(buf[:n])
			if err != nil {
				continue
			}
			lastHeard = time.Now()
			if !measured && m.Type != TypeGo {
				// The first direct answer to this send times the path; a
				// go may have been held back on purpose.
				measured = true
				c.mu.Lock()
				c.rtt = lastHeard.Sub(sent)
				c.mu.Unlock()
			}
			if m.Type == TypeError {
				return Message{}, &ServerError{m.Error}
			}
			if done(m) {
				return m, nil
			}
			// Waiting is fine: poll again with the backoff below.
		}
		if ctx.Err() != nil {
			return Message{}, fmt.Errorf("rendezvous: %w", ctx.Err())
		}
		if time.Since(lastHeard) > c.Silence {
			return Message{}, ErrServerSilent
		}
		rto = min(2*rto, maxRTO)
	}
}
