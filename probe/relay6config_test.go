package probe

import (
	"testing"

	"github.com/natlab/natlab/relay"
)

// TestRelay6Config: the IPv6 relay is Options.Relay6 when given, else
// Relay's credentials on Server6, always asking for an IPv6 relayed
// address; a TLS server given as an IPv4 literal has no IPv6 side to try,
// a name is kept (it resolves to its IPv6 address); no relay stage or no
// Server6, no IPv6 relay.
func TestRelay6Config(t *testing.T) {
	r4 := &RelayConfig{Server: "203.0.113.10:3478", Username: "u", Password: "p"}
	for _, tc := range []struct {
		name      string
		o         Options
		want      *RelayConfig
		tlsServer string
	}{
		{"no relay", Options{Server6: "[2001:db8::1]:3478"}, nil, ""},
		{"no server6", Options{Relay: r4}, nil, ""},
		{"derived", Options{Relay: r4, Server6: "[2001:db8::1]:3478"},
			&RelayConfig{Server: "[2001:db8::1]:3478", Username: "u", Password: "p", Family: relay.IPv6}, ""},
		{"derived, TLS by IPv4 literal", Options{Relay: &RelayConfig{Server: r4.Server, TLSServer: "203.0.113.10:443"}, Server6: "[2001:db8::1]:3478"},
			&RelayConfig{Server: "[2001:db8::1]:3478", Family: relay.IPv6}, ""},
		{"derived, TLS by name", Options{Relay: &RelayConfig{Server: r4.Server, TLSServer: "turn.example.net:443"}, Server6: "[2001:db8::1]:3478"},
			&RelayConfig{Server: "[2001:db8::1]:3478", Family: relay.IPv6}, "turn.example.net:443"},
		{"explicit", Options{Relay: r4, Server6: "[2001:db8::1]:3478", Relay6: &RelayConfig{Server: "[2001:db8::2]:3478", Username: "v"}},
			&RelayConfig{Server: "[2001:db8::2]:3478", Username: "v", Family: relay.IPv6}, ""},
	} {
		got := relay6Config(tc.o)
		if tc.want != nil {
			tc.want.TLSServer = tc.tlsServer
		}
		if (got == nil) != (tc.want == nil) || (got != nil && (got.Server != tc.want.Server || got.Username != tc.want.Username ||
			got.Password != tc.want.Password || got.Family != tc.want.Family || got.TLSServer != tc.want.TLSServer)) {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
	if r4.Family != "" || r4.Server != "203.0.113.10:3478" {
		t.Errorf("the IPv4 relay's configuration changed: %+v", r4)
	}
}
