// Package vnetlab builds small pion vnet topologies for tests: a server
// host with two public IPs on a WAN, and a client behind a NAT with given
// mapping and filtering behaviour.
package vnetlab

import (
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/logging"
	"github.com/pion/transport/v4/vnet"

	"github.com/natlab/natlab/natclass"
)

// Documentation-range addresses, as in the lab's addressing plan.
var (
	ServerIP1 = netip.MustParseAddr("203.0.113.10")
	ServerIP2 = netip.MustParseAddr("203.0.113.11")
	NATIP     = netip.MustParseAddr("203.0.113.100")
)

// buildMu serialises construction: vnet hands out MAC addresses from an
// unguarded global counter.
var buildMu sync.Mutex

// Lab is a running vnet topology.
type Lab struct {
	WAN    *vnet.Router
	LAN    *vnet.Router // nil without NAT
	Server *vnet.Net
	Client *vnet.Net
	// Extra are more hosts on the WAN, one per Config.ExtraHosts address.
	Extra []*vnet.Net
}

// Config describes a topology.
type Config struct {
	// Mapping and Filtering of the client's NAT; Mapping "" puts the
	// client on the WAN without NAT.
	Mapping, Filtering natclass.Behavior
	// Lifetime of idle mappings; 0 keeps vnet's default.
	Lifetime time.Duration
	// ExtraHosts are WAN addresses of more hosts (more STUN servers).
	ExtraHosts []netip.Addr
}

// Close stops the routers.
func (l *Lab) Close() error { return l.WAN.Stop() }

func dep(b natclass.Behavior) (vnet.EndpointDependencyType, error) {
	switch b {
	case natclass.EndpointIndependent:
		return vnet.EndpointIndependent, nil
	case natclass.AddressDependent:
		return vnet.EndpointAddrDependent, nil
	case natclass.AddressAndPortDependent:
		return vnet.EndpointAddrPortDependent, nil
	}
	return 0, fmt.Errorf("vnet cannot emulate behaviour %q", b)
}

// Start builds WAN + server (two IPs) + a client behind a NAT with the
// given behaviours.
func Start(cfg Config) (*Lab, error) {
	mapping, filtering, lifetime := cfg.Mapping, cfg.Filtering, cfg.Lifetime
	buildMu.Lock()
	defer buildMu.Unlock()
	wan, err := vnet.NewRouter(&vnet.RouterConfig{CIDR: "203.0.113.0/24", LoggerFactory: quiet()})
	if err != nil {
		return nil, fmt.Errorf("vnet wan: %w", err)
	}
	l := &Lab{WAN: wan}
	l.Server, err = vnet.NewNet(&vnet.NetConfig{StaticIPs: []string{ServerIP1.String(), ServerIP2.String()}})
	if err != nil {
		return nil, fmt.Errorf("vnet server: %w", err)
	}
	if err := wan.AddNet(l.Server); err != nil {
		return nil, fmt.Errorf("vnet server: %w", err)
	}
	for _, ip := range cfg.ExtraHosts {
		h, err := vnet.NewNet(&vnet.NetConfig{StaticIPs: []string{ip.String()}})
		if err != nil {
			return nil, fmt.Errorf("vnet host %s: %w", ip, err)
		}
		if err := wan.AddNet(h); err != nil {
			return nil, fmt.Errorf("vnet host %s: %w", ip, err)
		}
		l.Extra = append(l.Extra, h)
	}
	if mapping == "" {
		l.Client, err = vnet.NewNet(&vnet.NetConfig{StaticIPs: []string{"203.0.113.50"}})
		if err != nil {
			return nil, fmt.Errorf("vnet client: %w", err)
		}
		if err := wan.AddNet(l.Client); err != nil {
			return nil, fmt.Errorf("vnet client: %w", err)
		}
	} else {
		m, err := dep(mapping)
		if err != nil {
			return nil, err
		}
		f, err := dep(filtering)
		if err != nil {
			return nil, err
		}
		l.LAN, err = vnet.NewRouter(&vnet.RouterConfig{
			CIDR: "192.168.1.0/24", StaticIPs: []string{NATIP.String()}, LoggerFactory: quiet(),
			NATType: &vnet.NATType{MappingBehavior: m, FilteringBehavior: f, MappingLifeTime: lifetime},
		})
		if err != nil {
			return nil, fmt.Errorf("vnet nat: %w", err)
		}
		if err := wan.AddRouter(l.LAN); err != nil {
			return nil, fmt.Errorf("vnet nat: %w", err)
		}
		l.Client, err = vnet.NewNet(&vnet.NetConfig{})
		if err != nil {
			return nil, fmt.Errorf("vnet client: %w", err)
		}
		if err := l.LAN.AddNet(l.Client); err != nil {
			return nil, fmt.Errorf("vnet client: %w", err)
		}
	}
	if err := wan.Start(); err != nil {
		return nil, fmt.Errorf("vnet start: %w", err)
	}
	return l, nil
}

// quiet is a logger factory that only reports errors: vnet logs every
// dropped packet, which filtering tests produce on purpose.
func quiet() logging.LoggerFactory {
	f := logging.NewDefaultLoggerFactory()
	f.DefaultLogLevel = logging.LogLevelError
	return f
}
