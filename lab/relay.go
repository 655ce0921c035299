package lab

import (
	"net/netip"

	"github.com/natlab/natlab/probe"
	"github.com/natlab/natlab/server"
	"github.com/natlab/natlab/testnet"
)

// Lab TURN credentials: the lab server accepts them, and lab probes use
// them.
const (
	TURNUser = "natlab"
	TURNPass = "natlab-lab"
)

// TURNConfig is the TURN part of the lab server: the lab's credentials,
// and its public ranges (documentation addresses, refused by default)
// opened for relaying, IPv4's and IPv6's. StartServer and StartServer6
// pass it as server.Config.TURN.
func TURNConfig() *server.TURNConfig {
	return &server.TURNConfig{
		Users: map[string]string{TURNUser: TURNPass},
		Peers: server.PeerPolicy{Allow: []netip.Prefix{
			netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("203.0.113.0/24"),
			netip.MustParsePrefix("2001:db8::/32"),
		}},
	}
}

// RelayConfig is how a lab probe reaches the lab server's TURN relay.
func RelayConfig(l *testnet.Lab) *probe.RelayConfig {
	return &probe.RelayConfig{
		Server:   netip.AddrPortFrom(l.Server.Addr(), STUNPort).String(),
		Username: TURNUser, Password: TURNPass,
	}
}

// RelayConfig6 is how a lab probe reaches the lab server's TURN relay
// over IPv6 (StartServer6), for an IPv6 relayed address; nil when the lab
// is not dual stack.
func RelayConfig6(l *testnet.Lab) *probe.RelayConfig {
	if len(l.Server.Addrs6) == 0 {
		return nil
	}
	return &probe.RelayConfig{
		Server:   netip.AddrPortFrom(l.Server.Addrs6[0], STUNPort).String(),
		Username: TURNUser, Password: TURNPass,
	}
}
