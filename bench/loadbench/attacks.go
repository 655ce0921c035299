package main

import (
	"context"
	"encoding/binary"
	"net"
	"strings"
	"time"

	"github.com/pion/stun/v3"

	"github.com/natlab/natlab/rendezvous"
)

// pace calls f n times a second, in 1 ms slices, until ctx ends.
func pace(ctx context.Context, n int, f func()) {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	start, done := time.Now(), 0
	for ctx.Err() == nil {
		due := int(time.Since(start).Seconds() * float64(n))
		for ; done < due && ctx.Err() == nil; done++ {
			f()
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
}

// floodBinding sends Binding requests from 4 sockets of 127.0.0.2.
func floodBinding(ctx context.Context, o options, atk *attackCounts) {
	n := atk.counter("binding")
	to, err := net.ResolveUDPAddr("udp4", o.server)
	if err != nil {
		return
	}
	var socks []*net.UDPConn
	for range 4 {
		c, err := net.ListenUDP("udp4", udpFrom("127.0.0.2"))
		if err != nil {
			return
		}
		_ = c.SetReadBuffer(1 << 16) // answers are not read
		defer c.Close()
		socks = append(socks, c)
	}
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw
	i := 0
	pace(ctx, o.flood, func() {
		_, _ = socks[i%len(socks)].WriteToUDP(req, to)
		i++
		n.Add(1)
	})
}

// floodRendezvous sends creates with fresh codes from 127.0.0.3 and
// 127.0.0.6 and steps for codes that do not exist from 127.0.0.3.
func floodRendezvous(ctx context.Context, o options, atk *attackCounts) {
	creates, steps := atk.counter("creates"), atk.counter("steps")
	to, err := net.ResolveUDPAddr("udp4", o.server)
	if err != nil {
		return
	}
	var socks []*net.UDPConn
	for _, ip := range []string{"127.0.0.3", "127.0.0.6"} {
		c, err := net.ListenUDP("udp4", udpFrom(ip))
		if err != nil {
			return
		}
		_ = c.SetReadBuffer(1 << 16)
		defer c.Close()
		socks = append(socks, c)
	}
	tok := strings.Repeat("ab", 16)
	i := 0
	pace(ctx, 4000, func() {
		code, _ := rendezvous.NewCode()
		if i%2 == 0 {
			b, _ := rendezvous.EncodeRequest(rendezvous.Message{Type: rendezvous.TypeCreate, Code: code, Token: tok})
			_, _ = socks[(i/2)%2].WriteToUDP(b, to)
			creates.Add(1)
		} else {
			b, _ := rendezvous.Encode(rendezvous.Message{Type: rendezvous.TypeStep, Code: code, Token: tok, Step: 1, RTT: 1e12})
			_, _ = socks[0].WriteToUDP(b, to)
			steps.Add(1)
		}
		i++
	})
}

func dialFrom(ctx context.Context, src, server string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: time.Second}
	return d.DialContext(ctx, "tcp4", server)
}

var unauthAllocate = stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest),
	stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}}).Raw

// idleTCP opens connections from 127.0.0.4 that send one unauthenticated
// Allocate and then nothing, and holds them until the end.
func idleTCP(ctx context.Context, o options, atk *attackCounts) {
	n := atk.counter("idle_tcp")
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	pace(ctx, 500, func() {
		if int(n.Load()) >= o.idle {
			return
		}
		n.Add(1)
		c, err := dialFrom(ctx, "127.0.0.4", o.server)
		if err != nil {
			return
		}
		_, _ = c.Write(unauthAllocate)
		conns = append(conns, c)
	})
}

// oversizedFrames sends, on fresh connections from 127.0.0.5, an
// Allocate and a ChannelData frame longer than any datagram.
func oversizedFrames(ctx context.Context, o options, atk *attackCounts) {
	n := atk.counter("oversized_frames")
	frame := make([]byte, 4+0x10000)
	binary.BigEndian.PutUint16(frame[0:2], 0x4000)
	binary.BigEndian.PutUint16(frame[2:4], 0xFFFF)
	pace(ctx, 100, func() {
		c, err := dialFrom(ctx, "127.0.0.5", o.server)
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(100 * time.Millisecond))
		_, _ = c.Write(unauthAllocate)
		_, _ = c.Write(frame)
		n.Add(1)
	})
}
