package portmap

import (
	"errors"
	"net/netip"
	"os/exec"
	"regexp"
	"runtime"
	"testing"
)

func TestDefaultGatewayChoice(t *testing.T) {
	p := netip.MustParsePrefix
	a := netip.MustParseAddr
	def := p("0.0.0.0/0")
	tests := []struct {
		name   string
		routes []sysRoute
		want   string // "" for ErrNoGateway
	}{
		{"none", nil, ""},
		{"only on-link routes", []sysRoute{{dst: p("10.0.0.0/24")}, {dst: def, gw: a("0.0.0.0")}}, ""},
		{"a gateway for a subnet is not the default", []sysRoute{{dst: p("10.1.0.0/16"), gw: a("10.0.0.254")}}, ""},
		{"one default", []sysRoute{{dst: p("10.0.0.0/24")}, {dst: def, gw: a("10.0.0.1")}}, "10.0.0.1"},
		{"lowest metric wins", []sysRoute{{dst: def, gw: a("192.168.1.1"), metric: 600}, {dst: def, gw: a("10.0.0.1"), metric: 100}}, "10.0.0.1"},
		{"equal metrics: the system's order", []sysRoute{{dst: def, gw: a("192.168.1.1")}, {dst: def, gw: a("10.0.0.1")}}, "192.168.1.1"},
		{"unscoped before interface-scoped (macOS)", []sysRoute{{dst: def, gw: a("172.20.10.1"), scoped: true}, {dst: def, gw: a("192.168.1.1"), metric: 5}}, "192.168.1.1"},
		{"IPv6 ignored", []sysRoute{{dst: p("::/0"), gw: a("fe80::1")}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := defaultGateway(tt.routes)
			if tt.want == "" {
				if !errors.Is(err, ErrNoGateway) {
					t.Errorf("defaultGateway = %v, %v; want ErrNoGateway", got, err)
				}
				return
			}
			if err != nil || got != a(tt.want) {
				t.Errorf("defaultGateway = %v, %v; want %s", got, err, tt.want)
			}
		})
	}
}

// gatewayCommands print the default gateway with the system's own tool,
// and how to find it in their output.
var gatewayCommands = map[string]struct {
	args []string
	re   *regexp.Regexp
}{
	"linux":   {[]string{"ip", "-4", "route", "show", "default"}, regexp.MustCompile(`default via (\S+)`)},
	"darwin":  {[]string{"route", "-n", "get", "default"}, regexp.MustCompile(`gateway: (\S+)`)},
	"freebsd": {[]string{"route", "-n", "get", "default"}, regexp.MustCompile(`gateway: (\S+)`)},
	"windows": {[]string{"route", "print", "-4", "0.0.0.0"}, regexp.MustCompile(`(?m)^\s*0\.0\.0\.0\s+0\.0\.0\.0\s+(\d+\.\d+\.\d+\.\d+)`)},
}

// TestDefaultGatewayMatchesSystem: this OS's DefaultGateway (gateway_*.go)
// agrees with the system's own routing tool on this host.
func TestDefaultGatewayMatchesSystem(t *testing.T) {
	c, ok := gatewayCommands[runtime.GOOS]
	if !ok {
		t.Skipf("no routing tool known on %s", runtime.GOOS)
	}
	out, err := exec.Command(c.args[0], c.args[1:]...).Output()
	if errors.Is(err, exec.ErrNotFound) {
		t.Skipf("%s not installed: %v", c.args[0], err)
	}
	got, gerr := DefaultGateway()
	m := c.re.FindSubmatch(out)
	if err != nil || m == nil {
		// No default route here (an isolated CI network): both agree.
		if !errors.Is(gerr, ErrNoGateway) {
			t.Errorf("%v found no default route (%v), DefaultGateway = %v, %v", c.args, err, got, gerr)
		}
		return
	}
	want, perr := netip.ParseAddr(string(m[1]))
	if perr != nil {
		t.Fatalf("%v: %v", c.args, perr)
	}
	if gerr != nil || got != want {
		t.Errorf("DefaultGateway = %v, %v; %v says %v", got, gerr, c.args, want)
	}
}
