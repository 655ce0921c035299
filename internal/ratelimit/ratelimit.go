// Package ratelimit holds per-source token buckets for natlab serve: each
// source may send Rate messages a second on average and Burst at once;
// what exceeds it is dropped unanswered, as a loaded server would.
package ratelimit

import (
	"hash/maphash"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// The table of sources is bounded: when it is full of active sources, new ones share one
// overflow bucket (overflowFactor times a source's), so a flood of
// spoofed sources costs memory in proportion to the bound only.

const (
	// limiterShards spread the buckets over locks, so two cores rarely
	// wait on each other.
	limiterShards = 16
	// maxSources bounds the sources tracked per limiter (about 64 bytes
	// each: 4 MiB per limiter at most).
	maxSources = 1 << 16
	// overflowFactor sizes the shared bucket of untracked sources.
	overflowFactor = 10
	// sweepEvery is the least time between two sweeps of a full shard.
	sweepEvery = time.Second
)

type bucket struct {
	tokens float64
	last   int64 // ns on the limiter's clock
}

type limiterShard struct {
	mu        sync.Mutex
	m         map[netip.Addr]*bucket
	swept     bool
	lastSweep int64
}

// Limiter is a set of per-source token buckets. A nil Limiter, or one
// with a rate of 0 or less, allows everything.
type Limiter struct {
	rate, burst float64 // rate <= 0: unlimited
	seed        maphash.Seed
	shards      [limiterShards]limiterShard
	overflow    limiterShard // one bucket, key netip.Addr{}
	dropped     atomic.Uint64
	start       time.Time
}

// New returns a limiter of rate messages a second and burst at once per
// source.
func New(rate float64, burst int) *Limiter {
	l := &Limiter{rate: rate, burst: float64(max(burst, 1)), seed: maphash.MakeSeed(), start: time.Now()}
	for i := range l.shards {
		l.shards[i].m = map[netip.Addr]*bucket{}
	}
	l.overflow.m = map[netip.Addr]*bucket{{}: {tokens: l.burst * overflowFactor}}
	return l
}

// Allow takes a token from src's bucket; false means drop the message.
func (l *Limiter) Allow(src netip.Addr) bool {
	if l == nil || l.rate <= 0 {
		return true
	}
	return l.allowAt(src, int64(time.Since(l.start)))
}

func (l *Limiter) allowAt(src netip.Addr, now int64) bool {
	k := Source(src)
	a16 := k.As16()
	sh := &l.shards[maphash.Bytes(l.seed, a16[:])%limiterShards]
	sh.mu.Lock()
	b := sh.m[k]
	if b == nil {
		if len(sh.m) >= maxSources/limiterShards {
			l.sweep(sh, now)
		}
		if len(sh.m) >= maxSources/limiterShards {
			sh.mu.Unlock()
			return l.take(&l.overflow, netip.Addr{}, now, overflowFactor)
		}
		b = &bucket{tokens: l.burst, last: now}
		sh.m[k] = b
	}
	ok := l.refill(b, now, 1)
	sh.mu.Unlock()
	if !ok {
		l.dropped.Add(1)
	}
	return ok
}

func (l *Limiter) take(sh *limiterShard, k netip.Addr, now int64, factor float64) bool {
	sh.mu.Lock()
	ok := l.refill(sh.m[k], now, factor)
	sh.mu.Unlock()
	if !ok {
		l.dropped.Add(1)
	}
	return ok
}

// refill adds the tokens earned since b.last and takes one.
func (l *Limiter) refill(b *bucket, now int64, factor float64) bool {
	b.tokens = min(l.burst*factor, b.tokens+float64(now-b.last)/1e9*l.rate*factor)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// sweep forgets the sources whose buckets have refilled: they are idle,
// and a new bucket for them would be the same.
func (l *Limiter) sweep(sh *limiterShard, now int64) {
	if sh.swept && now-sh.lastSweep < int64(sweepEvery) {
		return
	}
	sh.swept, sh.lastSweep = true, now
	for k, b := range sh.m {
		if b.tokens+float64(now-b.last)/1e9*l.rate >= l.burst {
			delete(sh.m, k)
		}
	}
}

// Dropped is how many messages the limiter refused.
func (l *Limiter) Dropped() uint64 {
	if l == nil {
		return 0
	}
	return l.dropped.Load()
}

// Sources is how many sources the limiter tracks now.
func (l *Limiter) Sources() int {
	n := 0
	for i := range l.shards {
		l.shards[i].mu.Lock()
		n += len(l.shards[i].m)
		l.shards[i].mu.Unlock()
	}
	return n
}

// Source is what per-source limits count by: the IPv4 address, or the
// IPv6 /64 (one host, or one home, usually holds a whole /64).
func Source(ip netip.Addr) netip.Addr {
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.Addr()
	}
	return ip
}
