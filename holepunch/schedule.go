package holepunch

import (
	"slices"
	"time"
)

// Punch schedule defaults, each with why.
const (
	// DefaultPunchTimeout bounds a UDP punch: after five seconds of probes
	// every 200 ms a pair that has not met will not meet (RFC 8445's ICE
	// checks give up in a similar time), and a caller must fail fast.
	DefaultPunchTimeout = 5 * time.Second
	// defaultBurst packets go out at the start, so one lost opening packet
	// does not cost a whole retry interval.
	defaultBurst = 3
	// defaultBurstGap spaces the burst, so the packets are not dropped by
	// the same momentary queue overflow.
	defaultBurstGap = 10 * time.Millisecond
	// defaultFirstInterval is the first retry interval: short enough that
	// the second side, started up to a round trip later, is met quickly.
	defaultFirstInterval = 50 * time.Millisecond
	// defaultMaxInterval caps the backoff: NAT mappings need refreshing far
	// less often, but a peer that starts late should not wait long.
	defaultMaxInterval = 200 * time.Millisecond
	// defaultBackoff grows the interval between retries.
	defaultBackoff = 1.5
	// DefaultOpening is how long probes only open our own mappings (sent
	// with the opening TTL, when one is set): the two peers start within
	// a rendezvous round trip of each other, and the later one's mapping
	// must exist before the earlier one's probes reach its router
	// (the conntrack trap). 150 ms covers most server RTTs.
	DefaultOpening = 150 * time.Millisecond
)

// Schedule describes when probes are sent, as data: a burst at t=0, then
// retries at growing intervals, up to a total time.
type Schedule struct {
	Burst    int           // packets at the start (at least one)
	BurstGap time.Duration // time between burst packets
	First    time.Duration // first retry interval after the burst
	Max      time.Duration // cap of the retry interval
	Backoff  float64       // factor applied to the interval after each retry (>= 1)
	Total    time.Duration // no send at or after this time
	// Opening is the start of the punch during which sends carry the
	// opening TTL (Config.OpeningTTL); the first send after it is the
	// first that can reach the peer.
	Opening time.Duration
}

// DefaultSchedule is the schedule of a UDP punch.
func DefaultSchedule() Schedule {
	return Schedule{
		Burst: defaultBurst, BurstGap: defaultBurstGap,
		First: defaultFirstInterval, Max: defaultMaxInterval, Backoff: defaultBackoff,
		Total: DefaultPunchTimeout, Opening: DefaultOpening,
	}
}

// Times returns the send times, from the start of the punch, in increasing
// order. It is a pure function of s. When Opening is set, a send falls
// exactly at its end, so the first probe that can reach the peer is not
// delayed by the backoff.
func (s Schedule) Times() []time.Duration {
	ts := s.times()
	if s.Opening <= 0 || s.Opening >= s.Total {
		return ts
	}
	i, found := slices.BinarySearch(ts, s.Opening)
	if found {
		return ts
	}
	return slices.Insert(ts, i, s.Opening)
}

func (s Schedule) times() []time.Duration {
	burst := max(s.Burst, 1)
	iv := s.First
	if iv <= 0 {
		iv = defaultFirstInterval
	}
	maxIv := max(s.Max, iv)
	backoff := max(s.Backoff, 1)
	var out []time.Duration
	t := time.Duration(0)
	for i := range burst {
		t = time.Duration(i) * s.BurstGap
		if t >= s.Total {
			return out
		}
		out = append(out, t)
	}
	for {
		t += iv
		if t >= s.Total {
			return out
		}
		out = append(out, t)
		iv = min(time.Duration(float64(iv)*backoff), maxIv)
	}
}
