package portmap

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/natlab/natlab/internal/millis"
	"github.com/natlab/natlab/internal/stuntx"
	"github.com/natlab/natlab/natclass"
)

const (
	// VerifyTimeout bounds VerifyInbound when ctx has no earlier deadline:
	// silence means "the mapping does not admit traffic", and five
	// transmissions with doubling intervals from verifyRTO tell that from
	// a lost datagram.
	VerifyTimeout = 2 * time.Second
	// verifyRTO is the first retransmission interval, natclass's 100 ms.
	verifyRTO = 100 * time.Millisecond
)

// VerifyInbound checks that the mapping m really admits traffic from the
// internet: from conn (the mapped socket) it sends an RFC 5780 Binding
// request asking the STUN server to answer from its other IP and port
// (CHANGE-REQUEST) to the mapping's external port (RESPONSE-PORT). The
// answer arrives only through the mapping, since it comes from an address
// conn never sent to, to a port that is not conn's ordinary NAT binding:
// Yes when it does, No after VerifyTimeout of silence, NotChecked (with
// the error) when the server cannot make the test (no alternate address,
// RESPONSE-PORT unsupported) or sees us at another public address than
// the mapping's. conn must not be read by anyone else meanwhile.
func VerifyInbound(ctx context.Context, conn net.PacketConn, m Mapping, server netip.AddrPort) (natclass.Tri, error) {
	req, err := stuntx.Request(stuntx.ChangeIP|stuntx.ChangePort, stuntx.ResponsePort(m.External.Port()))
	if err != nil {
		return natclass.NotChecked, err
	}
	a, err := stuntx.Datagram(ctx, conn, server, req, stuntx.Backoff(verifyRTO, VerifyTimeout))
	var se *stuntx.ServerError
	switch {
	case errors.Is(err, stuntx.ErrTimeout) || ctx.Err() != nil:
		return natclass.No, nil
	case errors.As(err, &se):
		return natclass.NotChecked, fmt.Errorf("server %v cannot run the test: %v", server, se)
	case err != nil:
		return natclass.NotChecked, err
	}
	if got, ok := stuntx.Mapped(a.Msg); ok && got.Addr() != m.External.Addr() {
		return natclass.NotChecked, fmt.Errorf("server sees us at %v, the mapping is at %v", got.Addr(), m.External.Addr())
	}
	if a.From == server {
		// Came straight back from where we sent: the server ignored
		// CHANGE-REQUEST, which proves nothing.
		return natclass.NotChecked, fmt.Errorf("server %v answered from its own address", server)
	}
	return natclass.Yes, nil
}

// Inbound is the result of Check's test mapping: did traffic from the
// internet get through it.
type Inbound struct {
	Protocol Protocol       `json:"protocol"`
	External netip.AddrPort `json:"external"`
	// Admitted is true when the STUN server's answer came in through the
	// mapping, false when it did not, null when the test could not run.
	Admitted natclass.Tri `json:"admitted"`
	// Error says why the test could not run, or why nothing came in.
	Error string `json:"error,omitempty"`
}

// Check is Probe plus, when a protocol answers and server (natlab serve's
// STUN address, with an alternate IP and port) is valid, one test mapping
// of a fresh socket that VerifyInbound checks from the server, deleted
// again before Check returns. It is bounded by Probe's bound plus
// DefaultMapTimeout twice (map, unmap) and VerifyTimeout.
func Check(ctx context.Context, o Options, server netip.AddrPort) Report {
	if !o.Beyond.IsValid() {
		o.Beyond = server
	}
	c, err := NewClient(o)
	if err != nil {
		return Probe(ctx, o) // reports the same error, per protocol
	}
	start := time.Now()
	r := c.Probe(ctx)
	if !r.Any() || !server.IsValid() {
		return r
	}
	r.Inbound = c.checkInbound(ctx, server)
	r.DurationMillis = millis.Of(time.Since(start))
	return r
}

func (c *Client) checkInbound(ctx context.Context, server netip.AddrPort) *Inbound {
	conn, err := c.net.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		return &Inbound{Error: "open socket: " + err.Error()}
	}
	defer conn.Close()
	m, err := c.MapAny(ctx, localPort(conn), time.Minute)
	if err != nil {
		return &Inbound{Error: err.Error()}
	}
	in := &Inbound{Protocol: m.Protocol, External: m.External}
	defer func() {
		uctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		if err := c.Unmap(uctx, m); err != nil && in.Error == "" {
			in.Error = "delete test mapping: " + err.Error()
		}
	}()
	if a := m.External.Addr(); slices.ContainsFunc(privateV4, func(p netip.Prefix) bool { return p.Contains(a) }) {
		// A home router behind a carrier-grade NAT (or another router)
		// maps on its own WAN address, which the internet cannot reach.
		in.Admitted = natclass.No
		in.Error = fmt.Sprintf("the gateway's external address %v is private: another NAT is in front of it, so the mapping does not reach the internet", a)
		return in
	}
	got, err := VerifyInbound(ctx, conn, m, server)
	in.Admitted = got
	switch {
	case err != nil:
		in.Error = err.Error()
	case got == natclass.No:
		in.Error = fmt.Sprintf("nothing from %v's other address reached %v within %v", server, m.External, VerifyTimeout)
	}
	return in
}
