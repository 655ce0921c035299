package holepunch_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/natlab/natlab/holepunch"
	"github.com/natlab/natlab/internal/leakcheck"
	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/testnet"
)

// pairBound bounds one pair test: lab start, two profiles, two reflexive
// look-ups and a punch that fails after DefaultPunchTimeout.
const pairBound = 40 * time.Second

// udpPairs are the preset pairs punched with PunchUDP (plus prediction from
// the profile), and whether a direct path must be found.
var udpPairs = []struct {
	a, b string
	want bool
	tech natclass.Technique // on side B, when want; "" for either direct technique
}{
	{"full-cone", "full-cone", true, natclass.DirectUDP},
	{"full-cone", "port-restricted-cone", true, natclass.DirectUDP},
	{"restricted-cone", "port-restricted-cone", true, natclass.DirectUDP},
	{"port-restricted-cone", "port-restricted-cone", true, natclass.DirectUDP},
	{"double-nat", "port-restricted-cone", true, natclass.DirectUDP},
	{"open", "symmetric", true, natclass.DirectUDP},
	// Peer-reflexive replies punch a symmetric NAT against a peer whose
	// filtering ignores the port.
	{"symmetric", "full-cone", true, natclass.DirectUDP},
	{"symmetric", "restricted-cone", true, natclass.DirectUDP},
	// Port prediction: the cone side probes the sequential side's next
	// ports. (Against full and restricted cones the peer-reflexive reply
	// alone would do, as for plain symmetric; the port-restricted cone
	// needs the prediction.)
	{"symmetric-sequential", "full-cone", true, natclass.PredictUDP},
	{"symmetric-sequential", "restricted-cone", true, natclass.PredictUDP},
	{"symmetric-sequential", "port-restricted-cone", true, natclass.PredictUDP},
	// Needs birthday probing (TestBirthday), not plain punching.
	{"symmetric", "port-restricted-cone", false, ""},
	{"symmetric", "symmetric", false, ""},
	{"full-cone", "udp-blocked", false, ""},
}

func TestPunchUDPPairs(t *testing.T) {
	for _, backend := range []testnet.Backend{testnet.InProcess, testnet.Kernel} {
		t.Run(string(backend), func(t *testing.T) {
			for _, pc := range udpPairs {
				t.Run(pc.a+"×"+pc.b, func(t *testing.T) {
					runUDPPair(t, backend, pc.a, pc.b, pc.want, pc.tech)
				})
			}
		})
	}
}

func runUDPPair(t *testing.T, backend testnet.Backend, presetA, presetB string, want bool, tech natclass.Technique) {
	ctx, cancel := context.WithTimeout(context.Background(), pairBound)
	defer cancel()
	lab := startLab(t, backend, presetA, presetB)
	ha, hb := lab.Site("a").Host, lab.Site("b").Host
	profA, profB := profile(t, ctx, ha), profile(t, ctx, hb)
	leakcheck.Check(t)
	a := newPeer(t, ctx, ha, profA)
	b := newPeer(t, ctx, hb, profB)
	start := time.Now()
	o := punchPairSkew(ctx, a, b, openingTTL(presetA), openingTTL(presetB), 0)
	took := time.Since(start)
	t.Logf("%s × %s on %s: %v", presetA, presetB, backend, o)
	if o.ok() != want {
		t.Fatalf("%s × %s: success=%v, want %v", presetA, presetB, o.ok(), want)
	}
	if !want {
		// Failing must be fast and bounded by the documented deadline.
		if bound := holepunch.DefaultPunchTimeout + time.Second; took > bound {
			t.Errorf("failure took %v, want at most %v", took, bound)
		}
		// PunchUDP owned the sockets and must have closed them.
		for _, p := range []*peer{a, b} {
			if _, err := p.conn.WriteTo([]byte("x"), net.UDPAddrFromAddrPort(stunServer)); !errors.Is(err, net.ErrClosed) {
				t.Errorf("%s's socket still open after a failed punch: %v", p.host.Name, err)
			}
		}
		return
	}
	if tech == "" && o.b.Technique != natclass.DirectUDP && o.b.Technique != natclass.PredictUDP {
		t.Errorf("technique %q, want a direct UDP one", o.b.Technique)
	}
	if tech != "" && o.b.Technique != tech {
		t.Errorf("technique %q, want %q", o.b.Technique, tech)
	}
	if o.a.Remote != o.b.Mapped && o.b.Mapped.IsValid() {
		t.Errorf("A's remote %v is not B's mapped %v", o.a.Remote, o.b.Mapped)
	}
	if o.a.RTT <= 0 || o.b.RTT <= 0 {
		t.Errorf("no RTT measured: %v %v", o.a.RTT, o.b.RTT)
	}
}

// TestSameLAN punches two sockets on one host: the host candidates answer
// first and the technique says so.
func TestSameLAN(t *testing.T) {
	for _, backend := range []testnet.Backend{testnet.InProcess, testnet.Kernel} {
		t.Run(string(backend), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), pairBound)
			defer cancel()
			lab := startLab(t, backend, "port-restricted-cone", "")
			h := lab.Site("a").Host
			leakcheck.Check(t)
			a, b := newPeer(t, ctx, h, nil), newPeer(t, ctx, h, nil)
			o := punchPair(ctx, a, b, 0)
			t.Logf("%v", o)
			if !o.ok() {
				t.Fatalf("same host: %v", o)
			}
			if o.a.Technique != natclass.SameLAN || o.b.Technique != natclass.SameLAN {
				t.Errorf("techniques %q/%q, want %q", o.a.Technique, o.b.Technique, natclass.SameLAN)
			}
		})
	}
}

// openingTTL is one more than the NATs in front of a preset's host, so the
// opening probes leave the site but die at the lab's internet router.
func openingTTL(preset string) int {
	if preset == "double-nat" {
		return holepunch.DefaultOpeningTTL + 1
	}
	return holepunch.DefaultOpeningTTL
}

// TestPredictionNeeded checks that port prediction is what punches
// symmetric-sequential × port-restricted-cone: without the predicted
// candidates the same pair fails, within the punch deadline.
func TestPredictionNeeded(t *testing.T) {
	for _, backend := range []testnet.Backend{testnet.InProcess, testnet.Kernel} {
		t.Run(string(backend), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), pairBound)
			defer cancel()
			lab := startLab(t, backend, "symmetric-sequential", "port-restricted-cone")
			leakcheck.Check(t)
			a := newPeer(t, ctx, lab.Site("a").Host, nil) // no profile: no prediction
			b := newPeer(t, ctx, lab.Site("b").Host, nil)
			o := punchPair(ctx, a, b, holepunch.DefaultOpeningTTL)
			if o.ok() {
				t.Fatalf("punched without prediction: %v", o)
			}
			if !errors.Is(o.errA, holepunch.ErrNoPath) || !errors.Is(o.errB, holepunch.ErrNoPath) {
				t.Errorf("errors %v / %v, want ErrNoPath", o.errA, o.errB)
			}
		})
	}
}
