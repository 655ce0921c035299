package ratelimit

import (
	"net/netip"
	"testing"
	"time"
)

func TestBucket(t *testing.T) {
	l := New(10, 5)
	a := netip.MustParseAddr("198.51.100.1")
	got := 0
	for range 20 {
		if l.allowAt(a, 0) {
			got++
		}
	}
	if got != 5 || l.Dropped() != 15 {
		t.Fatalf("burst: %d allowed, %d dropped; want 5, 15", got, l.Dropped())
	}
	if !l.allowAt(a, int64(100*time.Millisecond)) || l.allowAt(a, int64(100*time.Millisecond)) {
		t.Error("0.1 s at 10/s should earn exactly one token")
	}
	if !l.allowAt(netip.MustParseAddr("198.51.100.2"), 0) {
		t.Error("another source shares the first one's bucket")
	}
}

func TestSourceGroupsIPv6Slash64(t *testing.T) {
	for _, tc := range []struct{ a, b string }{
		{"2001:db8:1:2::1", "2001:db8:1:2:ffff::9"},
		{"::ffff:198.51.100.1", "198.51.100.1"},
	} {
		if Source(netip.MustParseAddr(tc.a)) != Source(netip.MustParseAddr(tc.b)) {
			t.Errorf("%s and %s are different sources", tc.a, tc.b)
		}
	}
	if Source(netip.MustParseAddr("2001:db8:1:2::1")) == Source(netip.MustParseAddr("2001:db8:1:3::1")) {
		t.Error("two /64s are one source")
	}
}

// A full table sends new sources to the shared overflow bucket, and a
// sweep frees the idle ones.
func TestTableBounded(t *testing.T) {
	l := New(1, 1)
	for i := range 2 * maxSources {
		l.allowAt(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 0)
	}
	if n := l.Sources(); n > maxSources {
		t.Fatalf("%d sources tracked, bound %d", n, maxSources)
	}
	later := int64(10 * time.Second)
	if !l.allowAt(netip.MustParseAddr("192.0.2.1"), later) {
		t.Error("a new source after the others went idle was refused")
	}
	if n := l.Sources(); n > maxSources-maxSources/limiterShards+1 {
		t.Errorf("%d sources left after a sweep, want one shard's idle ones gone", n)
	}
}

func TestNilAndUnlimited(t *testing.T) {
	var l *Limiter
	if !l.Allow(netip.MustParseAddr("192.0.2.1")) || !New(0, 0).Allow(netip.MustParseAddr("192.0.2.1")) {
		t.Error("an unlimited limiter refused")
	}
}
