package testnet

import (
	"context"
	"errors"

	"testing"
	"time"

	"golang.org/x/net/ipv4"
)

// TestKernelSegmentHops checks what lies between a site's router and the
// server: on the routed topology a packet that leaves the router with
// TTL 1 expires at the internet router; on the shared segment it is
// delivered, because nothing lies between.
func TestKernelSegmentHops(t *testing.T) {
	for _, seg := range Segments() {
		t.Run(string(seg), func(t *testing.T) {
			top, err := PairTopology("full-cone", "port-restricted-cone")
			if err != nil {
				t.Fatal(err)
			}
			top.Segment = seg
			lab := kernStartLab(t, top)
			echo := kernStartEcho(t, lab.Server)
			c := kernListen(t, lab.Site("a").Host.Net)
			// TTL 2: one hop to the router, then one more.
			if err := ipv4.NewPacketConn(c).SetTTL(2); err != nil {
				t.Fatal(err)
			}
			_, got := kernAsk(t, c, echo.addrs[0], 0, 0, kernNegativeWait, 2)
			if want := seg == Shared; got != want {
				t.Errorf("a packet with TTL 2 reached the server: %v, want %v", got, want)
			}
			// Full TTL, both sites reach the server and each other's
			// router on either topology.
			c2 := kernListen(t, lab.Site("b").Host.Net)
			if _, ok := kernAsk(t, c2, echo.addrs[3], 3, 0, kernReplyWait, kernReplyTries); !ok {
				t.Fatal("site b: no reply from the server")
			}
		})
	}
}

// TestKernelSharedRejectsDelay checks that the shared segment refuses link
// delay (its delay lines are point-to-point) with ErrNotSupported, and the
// in-process backend refuses the shared segment.
func TestKernelSharedRejectsDelay(t *testing.T) {
	top, err := PairTopology("full-cone", "")
	if err != nil {
		t.Fatal(err)
	}
	top.Segment = Shared
	if _, err := Start(context.Background(), top, InProcess); !errors.Is(err, ErrNotSupported) {
		t.Errorf("in-process shared segment: err %v, want ErrNotSupported", err)
	}
	top.Sites[0].WAN.Delay = 10 * time.Millisecond
	if _, err := Start(context.Background(), top, Kernel); !errors.Is(err, ErrNotSupported) {
		t.Errorf("kernel shared segment with delay: err %v, want ErrNotSupported", err)
	}
	top.Segment = "star"
	if _, err := Start(context.Background(), top, Kernel); err == nil {
		t.Error("unknown segment accepted")
	}
}
