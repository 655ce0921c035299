//go:build !linux

package natclass

import (
	"net"
	"runtime"
	"strings"
	"testing"
)

// TestHopsNotRunOffLinux: off Linux the trace does not run and says why,
// naming the system, so the profile's not_run entry is honest.
func TestHopsNotRunOffLinux(t *testing.T) {
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := newHopConn(c, 1, false); err == nil || !strings.Contains(err.Error(), runtime.GOOS) {
		t.Errorf("newHopConn = %v; want the reason naming %s", err, runtime.GOOS)
	}
	var p Profile
	p.addHops(hopsOutcome{reason: errNoHopErrors.Error()})
	if p.NATDepth != nil || len(p.NotRun) != 1 || p.NotRun[0].Test != TestNATDepth {
		t.Errorf("profile: depth %v, not_run %+v", p.NATDepth, p.NotRun)
	}
}
