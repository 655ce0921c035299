package relay

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/natlab/natlab/internal/millis"
)

// Measurement defaults and bounds, each with why.
const (
	// DefaultEchoes is the number of RTT samples: 20 gives a median that
	// one late packet does not move and a p95 that is one real sample.
	DefaultEchoes = 20
	// DefaultEchoInterval spaces the pings so they measure the path, not
	// a queue they built themselves.
	DefaultEchoInterval = 20 * time.Millisecond
	// DefaultBurstBytes bounds what one burst sends: 4 MiB fills a
	// 100 Mbit/s path for a third of a second and costs a metered relay
	// little.
	DefaultBurstBytes = 4 << 20
	// DefaultBurstTime bounds a burst on a slow path.
	DefaultBurstTime = 2 * time.Second
	// DefaultPacketSize keeps a burst packet, with TURN's ChannelData and
	// IP/UDP headers, under a 1280-byte IPv6 minimum MTU path.
	DefaultPacketSize = 1200
	// echoGrace is added to the echo phase for the peer to start: the
	// rendezvous releases both peers within one server round trip.
	echoGrace = 3 * time.Second
	// finInterval spaces the end-of-burst reports (they are retransmitted
	// until the peer has reported too).
	finInterval = 50 * time.Millisecond
	// finTimeout bounds waiting for the peer's report after a burst: its
	// burst is bounded by the same BurstTime, so past this it is gone.
	finTimeout = 3 * time.Second
	// writeErrorPause lets a full socket buffer drain before the next
	// write of a burst.
	writeErrorPause = time.Millisecond
	// initialWindow is the burst's first window, in packets: small enough
	// for any socket buffer on the way, grown as acks come back.
	initialWindow = 16
	// minWindow is the window a burst never shrinks below.
	minWindow = 4
	// maxWindow caps the window below the 1024-datagram receive queue of
	// pion/turn's relayed connection, which drops beyond it.
	maxWindow = 512
	// ackEvery is how many data packets the receiver acks at once.
	ackEvery = 8
	// minStall is the least a full window waits for an ack before its
	// packets count as lost: timer granularity on a sub-millisecond path.
	minStall = 10 * time.Millisecond
)

// ErrNoEcho means the peer answered none of the pings: no working path.
var ErrNoEcho = errors.New("no answer from the peer")

// MeasureOptions configure Measure; both peers must use the same Tag.
type MeasureOptions struct {
	// Echoes is the number of RTT samples (DefaultEchoes).
	Echoes int
	// EchoInterval spaces the pings (DefaultEchoInterval).
	EchoInterval time.Duration
	// BurstBytes and BurstTime bound the burst; the first reached ends it.
	BurstBytes int
	BurstTime  time.Duration
	// PacketSize is the burst's payload size (DefaultPacketSize).
	PacketSize int
	// Tag marks this measurement's packets; packets with another tag are
	// ignored (use the session ID both peers share).
	Tag uint64
}

func (o *MeasureOptions) defaults() {
	if o.Echoes <= 0 {
		o.Echoes = DefaultEchoes
	}
	if o.EchoInterval <= 0 {
		o.EchoInterval = DefaultEchoInterval
	}
	if o.BurstBytes <= 0 {
		o.BurstBytes = DefaultBurstBytes
	}
	if o.BurstTime <= 0 {
		o.BurstTime = DefaultBurstTime
	}
	if o.PacketSize < minPacket {
		o.PacketSize = DefaultPacketSize
	}
}

// Figures are one side's measurement of a path.
type Figures struct {
	RTTMedianMillis float64 `json:"rtt_median_ms"` // median of the echoes
	RTTP95Millis    float64 `json:"rtt_p95_ms"`    // 95th percentile
	Echoes          int     `json:"echoes"`        // pings answered
	EchoesSent      int     `json:"echoes_sent"`   // pings sent
	// ThroughputMbps is the lower of the two directions (the one this
	// side received if the peer did not report).
	ThroughputMbps    float64 `json:"throughput_mbps"`
	ThroughputInMbps  float64 `json:"throughput_in_mbps"`            // peer → here, measured here
	ThroughputOutMbps float64 `json:"throughput_out_mbps,omitempty"` // here → peer, as the peer measured it
	LostInPercent     float64 `json:"lost_in_pct"`                   // of the peer's burst packets
	LostOutPercent    float64 `json:"lost_out_pct,omitempty"`        // of this side's, as the peer counted
	BytesSent         int64   `json:"bytes_sent"`                    // burst payload sent
	BytesReceived     int64   `json:"bytes_received"`                // burst payload received
	// PeerReported is false when the peer's end-of-burst report never
	// came: the out figures are then unknown.
	PeerReported   bool    `json:"peer_reported"`
	DurationMillis float64 `json:"duration_ms"`
}

// Wire format: "NLM" + type, the tag, then per type:
//
//	ping/pong: seq u32, sender's clock ns i64, flags u8 (1: echo done)
//	data:      seq u32, padding
//	fin:       sent pkts u64, sent bytes u64, rx pkts u64, rx bytes u64,
//	           rx span ns i64, flags u8 (1: rx final)
const (
	typPing   = 'P'
	typPong   = 'O'
	typData   = 'D'
	typFin    = 'F'
	typAck    = 'A'
	ackLen    = hdrLen + 16
	hdrLen    = 12
	pingLen   = hdrLen + 13
	finLen    = hdrLen + 41
	minPacket = finLen
)

type fin struct {
	sentPkts, sentBytes, rxPkts, rxBytes uint64
	rxSpan                               time.Duration
	final                                bool
}

// meter is the state the reader goroutine shares with the phases.
type meter struct {
	conn   net.PacketConn
	remote net.Addr
	tag    uint64
	start  time.Time

	mu        sync.Mutex
	rtts      []time.Duration
	peerDone  bool // the peer finished its echo phase
	rxPkts    uint64
	rxBytes   uint64
	rxFirst   time.Time
	rxFirstN  int
	rxLast    time.Time
	peerFin   *fin
	rxFrozen  bool // the peer's fin arrived: later data is not counted
	frozenFig [3]uint64
	rxHigh    uint64        // highest data sequence received + 1
	ackCount  uint64        // this side's data packets the peer has received
	ackHigh   uint64        // and the highest sequence among them + 1
	ackCh     chan struct{} // signalled on ack progress
}

// Measure runs the symmetric measurement with the peer at remote over
// conn: both peers call it at the same time (after a rendezvous barrier)
// with the same options. Each pings the other and answers its pings,
// then both burst at once and each counts what arrives, then they trade
// counts. conn is not closed; its read deadline is reset on return.
func Measure(ctx context.Context, conn net.PacketConn, remote net.Addr, o MeasureOptions) (Figures, error) {
	o.defaults()
	start := time.Now()
	m := &meter{conn: conn, remote: remote, tag: o.Tag, start: start, ackCh: make(chan struct{}, 1)}
	rctx, stopReader := context.WithCancel(ctx)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		m.read(rctx)
	}()
	stopCtx := context.AfterFunc(rctx, func() { _ = conn.SetReadDeadline(time.Unix(1, 0)) })
	defer func() {
		stopReader()
		<-readerDone
		stopCtx()
		_ = conn.SetReadDeadline(time.Time{})
	}()

	var fig Figures
	sent, err := m.echo(ctx, o)
	fig.EchoesSent = sent
	if err != nil {
		return fig, err
	}
	pkts, bytes, err := m.burst(ctx, o)
	fig.BytesSent = int64(bytes)
	if err != nil {
		return fig, err
	}
	m.finish(ctx, pkts, bytes)
	if err := ctx.Err(); err != nil {
		return fig, fmt.Errorf("measure: %w", err)
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	fig.Echoes = len(m.rtts)
	fig.RTTMedianMillis, fig.RTTP95Millis = percentiles(m.rtts)
	rxPkts, rxBytes, span := m.rxFigures()
	fig.BytesReceived = int64(rxBytes)
	fig.ThroughputInMbps = mbps(rxBytes, span, m.rxFirstN)
	if f := m.peerFin; f != nil {
		if f.sentPkts > 0 {
			fig.LostInPercent = lossPct(rxPkts, f.sentPkts)
		}
		if f.final {
			fig.PeerReported = true
			fig.ThroughputOutMbps = mbps(f.rxBytes, f.rxSpan, o.PacketSize)
			fig.LostOutPercent = lossPct(f.rxPkts, pkts)
		}
	}
	fig.ThroughputMbps = fig.ThroughputInMbps
	if fig.PeerReported {
		fig.ThroughputMbps = min(fig.ThroughputInMbps, fig.ThroughputOutMbps)
	}
	fig.DurationMillis = millis.Since(start)
	return fig, nil
}

// echo pings every interval until it has its samples and the peer has
// its own, or the phase times out. Having no sample at all is ErrNoEcho.
func (m *meter) echo(ctx context.Context, o MeasureOptions) (int, error) {
	limit := time.Duration(o.Echoes)*o.EchoInterval*2 + echoGrace
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	tick := time.NewTicker(o.EchoInterval)
	defer tick.Stop()
	buf := make([]byte, pingLen)
	sent := 0
	for {
		m.mu.Lock()
		have, peerDone := len(m.rtts), m.peerDone
		m.mu.Unlock()
		if have >= o.Echoes && peerDone {
			return sent, nil
		}
		flags := byte(0)
		if have >= o.Echoes {
			flags = 1
		}
		m.header(buf, typPing)
		binary.BigEndian.PutUint32(buf[hdrLen:], uint32(sent))
		binary.BigEndian.PutUint64(buf[hdrLen+4:], uint64(time.Since(m.start)))
		buf[hdrLen+12] = flags
		if _, err := m.conn.WriteTo(buf, m.remote); err == nil {
			sent++
		}
		select {
		case <-ctx.Done():
			return sent, fmt.Errorf("measure: %w", ctx.Err())
		case <-deadline.C:
			if have == 0 {
				return sent, fmt.Errorf("%w: %d pings in %v", ErrNoEcho, sent, limit)
			}
			return sent, nil // enough to go on; the peer may have given up on us
		case <-tick.C:
		}
	}
}

// burst sends data packets until BurstBytes or BurstTime, within a
// window the peer's acks open (slow start, then additive increase, halved
// when a full window stalls), so it measures what the path carries rather
// than how much a blast overflows it.
func (m *meter) burst(ctx context.Context, o MeasureOptions) (pkts, bytes uint64, err error) {
	buf := make([]byte, o.PacketSize)
	m.header(buf, typData)
	end := time.Now().Add(o.BurstTime)
	m.mu.Lock()
	_, p95 := percentiles(m.rtts)
	m.mu.Unlock()
	stall := max(time.Duration(3*p95*float64(time.Millisecond)), minStall)
	var (
		window   = float64(initialWindow)
		ssthresh = math.Inf(1)
		seen     uint64    // packets the peer has acked (received)
		lost     uint64    // gaps below the highest acked sequence, as last seen
		floor    uint64    // sequence below which nothing counts in flight
		lastCut  time.Time // the window is cut at most once per stall interval
	)
	failures := 0
	for bytes < uint64(o.BurstBytes) {
		if pkts%16 == 0 {
			if ctx.Err() != nil {
				return pkts, bytes, fmt.Errorf("measure: %w", ctx.Err())
			}
			if time.Now().After(end) {
				break
			}
		}
		for {
			m.mu.Lock()
			count, high := m.ackCount, m.ackHigh
			m.mu.Unlock()
			if d := float64(count - min(seen, count)); d > 0 {
				if window < ssthresh {
					window += d
				} else {
					window += d / window
				}
				seen = count
			}
			if gaps := high - min(count, high); gaps > lost {
				// A gap below the highest sequence received: loss, as
				// TCP's fast retransmit would read it.
				lost = gaps
				if time.Since(lastCut) > stall {
					ssthresh = max(window/2, minWindow)
					window, lastCut = ssthresh, time.Now()
				}
			}
			floor = max(floor, high)
			if float64(pkts-min(floor, pkts)) < min(window, maxWindow) {
				break
			}
			wait := time.NewTimer(min(stall, time.Until(end)))
			select {
			case <-m.ackCh:
				wait.Stop()
				continue
			case <-ctx.Done():
				wait.Stop()
				return pkts, bytes, fmt.Errorf("measure: %w", ctx.Err())
			case <-wait.C:
			}
			if time.Now().After(end) {
				return pkts, bytes, nil
			}
			// A full window and no ack: what is out is lost.
			floor = pkts
			ssthresh = max(window/2, minWindow)
			window, lastCut = ssthresh, time.Now()
		}
		binary.BigEndian.PutUint32(buf[hdrLen:], uint32(pkts))
		if _, err := m.conn.WriteTo(buf, m.remote); err != nil {
			if failures++; failures > 1000 {
				return pkts, bytes, fmt.Errorf("measure: burst: %w", err)
			}
			time.Sleep(writeErrorPause)
			if time.Now().After(end) {
				break
			}
			continue
		}
		pkts++
		bytes += uint64(len(buf))
	}
	return pkts, bytes, nil
}

// finish trades end-of-burst reports until both sides have the other's
// final one, or finTimeout.
func (m *meter) finish(ctx context.Context, pkts, bytes uint64) {
	tick := time.NewTicker(finInterval)
	defer tick.Stop()
	deadline := time.NewTimer(finTimeout)
	defer deadline.Stop()
	buf := make([]byte, finLen)
	linger := 0
	for {
		m.mu.Lock()
		rxPkts, rxBytes, span := m.rxFigures()
		peer := m.peerFin
		m.mu.Unlock()
		f := fin{sentPkts: pkts, sentBytes: bytes, rxPkts: rxPkts, rxBytes: rxBytes, rxSpan: span, final: peer != nil}
		m.header(buf, typFin)
		binary.BigEndian.PutUint64(buf[hdrLen:], f.sentPkts)
		binary.BigEndian.PutUint64(buf[hdrLen+8:], f.sentBytes)
		binary.BigEndian.PutUint64(buf[hdrLen+16:], f.rxPkts)
		binary.BigEndian.PutUint64(buf[hdrLen+24:], f.rxBytes)
		binary.BigEndian.PutUint64(buf[hdrLen+32:], uint64(f.rxSpan))
		buf[hdrLen+40] = 0
		if f.final {
			buf[hdrLen+40] = 1
		}
		_, _ = m.conn.WriteTo(buf, m.remote)
		if peer != nil && peer.final {
			// Both have what they need; a few more reports cover the
			// loss of the one that told the peer so.
			if linger++; linger > 2 {
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-deadline.C:
			return
		case <-tick.C:
		}
	}
}

// rxFigures are the burst counts, frozen at the peer's first report.
// Called with mu held.
func (m *meter) rxFigures() (pkts, bytes uint64, span time.Duration) {
	if m.rxFrozen {
		return m.frozenFig[0], m.frozenFig[1], time.Duration(m.frozenFig[2])
	}
	return m.rxPkts, m.rxBytes, m.rxLast.Sub(m.rxFirst)
}

func (m *meter) header(b []byte, typ byte) {
	b[0], b[1], b[2], b[3] = 'N', 'L', 'M', typ
	binary.BigEndian.PutUint64(b[4:12], m.tag)
}

// read answers pings and records pongs, data and reports until ctx ends.
func (m *meter) read(ctx context.Context) {
	buf := make([]byte, 64<<10)
	out := make([]byte, pingLen)
	ack := make([]byte, ackLen)
	for ctx.Err() == nil {
		n, from, err := m.conn.ReadFrom(buf)
		if err != nil {
			var ne net.Error
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			time.Sleep(writeErrorPause) // a transient error; do not spin
			continue
		}
		b := buf[:n]
		if n < hdrLen || b[0] != 'N' || b[1] != 'L' || b[2] != 'M' || binary.BigEndian.Uint64(b[4:12]) != m.tag {
			continue
		}
		m.handle(b, from, out, ack)
	}
}

// handle is one of the measurement's datagrams (header checked); out and
// ack are the reader's reply buffers.
func (m *meter) handle(b []byte, from net.Addr, out, ack []byte) {
	n := len(b)
	switch b[3] {
	case typPing:
		if n < pingLen {
			return
		}
		copy(out, b[:pingLen])
		out[3] = typPong
		_, _ = m.conn.WriteTo(out, from)
		if b[hdrLen+12]&1 != 0 {
			m.mu.Lock()
			m.peerDone = true
			m.mu.Unlock()
		}
	case typPong:
		if n < pingLen {
			return
		}
		rtt := time.Since(m.start) - time.Duration(binary.BigEndian.Uint64(b[hdrLen+4:]))
		m.mu.Lock()
		m.rtts = append(m.rtts, rtt)
		m.mu.Unlock()
	case typData:
		m.onData(b, from, ack)
	case typAck:
		if n < ackLen {
			return
		}
		got, high := binary.BigEndian.Uint64(b[hdrLen:]), binary.BigEndian.Uint64(b[hdrLen+8:])
		m.mu.Lock()
		if got > m.ackCount {
			m.ackCount, m.ackHigh = got, max(m.ackHigh, high)
			select {
			case m.ackCh <- struct{}{}:
			default:
			}
		}
		m.mu.Unlock()
	case typFin:
		if n >= finLen {
			m.onFin(b)
		}
	}
}

// onData counts a burst packet and acknowledges every ackEvery-th.
func (m *meter) onData(b []byte, from net.Addr, ack []byte) {
	now, n := time.Now(), len(b)
	m.mu.Lock()
	m.peerDone = true
	if !m.rxFrozen {
		if m.rxPkts == 0 {
			m.rxFirst, m.rxFirstN = now, n
		}
		m.rxPkts++
		m.rxBytes += uint64(n)
		m.rxLast = now
	}
	if n >= hdrLen+4 {
		m.rxHigh = max(m.rxHigh, uint64(binary.BigEndian.Uint32(b[hdrLen:]))+1)
	}
	count, high := m.rxPkts, m.rxHigh
	m.mu.Unlock()
	if count%ackEvery == 0 {
		m.header(ack, typAck)
		binary.BigEndian.PutUint64(ack[hdrLen:], count)
		binary.BigEndian.PutUint64(ack[hdrLen+8:], high)
		_, _ = m.conn.WriteTo(ack, from)
	}
}

// onFin records the peer's report and freezes this side's burst counts
// at the first one.
func (m *meter) onFin(b []byte) {
	f := &fin{
		sentPkts: binary.BigEndian.Uint64(b[hdrLen:]), sentBytes: binary.BigEndian.Uint64(b[hdrLen+8:]),
		rxPkts: binary.BigEndian.Uint64(b[hdrLen+16:]), rxBytes: binary.BigEndian.Uint64(b[hdrLen+24:]),
		rxSpan: time.Duration(binary.BigEndian.Uint64(b[hdrLen+32:])), final: b[hdrLen+40]&1 != 0,
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.peerDone = true
	if !m.rxFrozen {
		m.rxFrozen = true
		m.frozenFig = [3]uint64{m.rxPkts, m.rxBytes, uint64(m.rxLast.Sub(m.rxFirst))}
	}
	if m.peerFin == nil || !m.peerFin.final {
		m.peerFin = f
	}
}

// mbps is the rate of a burst seen by a receiver: the bytes after the
// first packet over the time from the first packet to the last.
func mbps(bytes uint64, span time.Duration, first int) float64 {
	if span <= 0 || bytes <= uint64(first) {
		return 0
	}
	return round2(float64(bytes-uint64(first)) * 8 / span.Seconds() / 1e6)
}

func lossPct(got, sent uint64) float64 {
	if sent == 0 || got >= sent {
		return 0
	}
	return round2(100 * float64(sent-got) / float64(sent))
}

// percentiles returns the median and the 95th percentile (nearest rank),
// in milliseconds.
func percentiles(d []time.Duration) (median, p95 float64) {
	if len(d) == 0 {
		return 0, 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	rank := func(p float64) time.Duration {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	var med time.Duration
	if len(s)%2 == 1 {
		med = s[len(s)/2]
	} else {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return ms(med), ms(rank(0.95))
}

func ms(d time.Duration) float64 { return round2(millis.Of(d)) }

func round2(f float64) float64 { return math.Round(f*100) / 100 }
