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
// opened for relaying. StartServer passes it as server.Config.TURN.
func TURNConfig() *server.TURNConfig {
	return &server.TURNConfig{
		Users: map[string]string{TURNUser: TURNPass},
		Peers: server.PeerPolicy{Allow: []netip.Prefix{
			netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("203.0.113.0/24"),
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
