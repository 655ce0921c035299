package lab

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/transport/v4"

	"github.com/natlab/natlab/internal/buildinfo"
	"github.com/natlab/natlab/internal/millis"
	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/probe"
	"github.com/natlab/natlab/rendezvous"
	"github.com/natlab/natlab/server"
	"github.com/natlab/natlab/testnet"
)

// Schema versions the JSON document of `natlab lab`.
const Schema = "natlab.lab/v1"

// Lab STUN ports: the standard port and the next one as RFC 5780's
// alternate port.
const (
	STUNPort    = 3478
	STUNAltPort = 3479
)

// Options configure Run.
type Options struct {
	Backend testnet.Backend
	// NATA and NATB are preset names; an empty NATB runs one site only.
	NATA, NATB string
	// Segment joins the routers of NATA and NATB: testnet.Routed ("")
	// or Shared.
	Segment testnet.Segment
	// Topology, if it has sites, is used instead of NATA/NATB and Segment.
	Topology testnet.Topology
	// Lifetime also measures binding lifetimes (slow).
	Lifetime bool
	// NoPair skips probing two sites together after profiling them.
	NoPair bool
	// Events, if set, receives the Plan first, then each site as its
	// profile finishes; calls do not overlap.
	Events func(probe.Event)
	Logger *slog.Logger
}

// Report is the result of one lab run: each site's profile next to what
// its preset should produce.
type Report struct {
	Schema        string   `json:"schema"`             // Schema
	NatlabVersion string   `json:"natlab_version"`     // the build that wrote it
	Backend       string   `json:"backend"`            // "in-process" or "kernel"
	Topology      string   `json:"topology,omitempty"` // "shared" when the routers share one segment
	Server        []string `json:"server"`             // the lab server's STUN addresses
	Sites         []Site   `json:"sites"`              // one per NAT site
	Match         bool     `json:"match"`              // every profile equals its preset, and the pair's predictions its measurements
	// Pair is the two sites probed together, as `natlab probe` on each
	// host would: the matrix cell of the two presets, alone. Nil with one
	// site, or when the backend cannot pair them (PairSkipped says why).
	Pair           *MatrixPair `json:"pair,omitempty"`
	PairSkipped    string      `json:"pair_skipped,omitempty"`
	DurationMillis float64     `json:"duration_ms"` // wall time, lab start to teardown
}

// Site is one site's result.
type Site struct {
	Name     string           `json:"name"`             // "a", "b"
	Preset   string           `json:"preset,omitempty"` // preset name, if any
	Public   string           `json:"public"`           // the site's public address
	Expected testnet.Expected `json:"expected"`         // what the preset should look like
	// ExpectedTCP is the TCP profile the preset should give (mapping,
	// filtering, port allocation); only on a backend with TCP.
	ExpectedTCP *testnet.Expected `json:"expected_tcp,omitempty"`
	Profile     *natclass.Profile `json:"profile,omitempty"`    // what natlab measured
	Mismatches  []string          `json:"mismatches,omitempty"` // expected vs measured, in words
	Error       string            `json:"error,omitempty"`      // why there is no profile
	// Dual-stack sites (natlab lab --ipv6): the IPv6 preset, the address
	// the internet sees, what the preset should give and what the IPv6
	// check measured; its mismatches join Mismatches prefixed "ipv6 ".
	IPv6Preset   string             `json:"ipv6_preset,omitempty"`
	Public6      string             `json:"public6,omitempty"`
	ExpectedIPv6 *testnet.Expected6 `json:"expected_ipv6,omitempty"`
	IPv6         *natclass.Profile  `json:"ipv6,omitempty"`
	IPv6Error    string             `json:"ipv6_error,omitempty"`
}

// StartServer starts natlab's server (STUN, rendezvous and TURN) on the lab's
// server host with both public addresses and both ports.
func StartServer(lab *testnet.Lab, log *slog.Logger) (*server.Server, error) {
	return listen(lab.Server.Net, lab.Server.Addrs, "", log, rendezvous.NewRegistry(nil))
}

// StartServers starts natlab's server on the lab server's IPv4 addresses
// and, in a dual-stack lab, on its IPv6 ones: one server per family,
// pairing through one rendezvous as natlab serve's families do (a host
// behind NAT64 pairs over IPv6 with a peer that pairs over IPv4). The
// group's first server is IPv4's, the second (if any) IPv6's.
func StartServers(lab *testnet.Lab, log *slog.Logger) (*server.Group, error) {
	reg := rendezvous.NewRegistry(nil)
	srv, err := listen(lab.Server.Net, lab.Server.Addrs, "", log, reg)
	if err != nil {
		return nil, err
	}
	g := &server.Group{Servers: []*server.Server{srv}}
	if len(lab.Server.Addrs6) == 2 {
		srv6, err := listen(lab.Server.Net, lab.Server.Addrs6, "IPv6 ", log, reg)
		if err != nil {
			_ = g.Close()
			return nil, err
		}
		g.Servers = append(g.Servers, srv6)
	}
	return g, nil
}

// Server6 is the IPv6 server's primary address in a group StartServers
// started, "" in an IPv4-only lab.
func Server6(g *server.Group) string {
	if len(g.Servers) < 2 {
		return ""
	}
	return g.Servers[1].Addrs().Primary.String()
}

// listen starts natlab's server (STUN, rendezvous through reg, TURN) on
// the first two of addrs and both lab ports; family names it in errors.
func listen(n transport.Net, addrs []netip.Addr, family string, log *slog.Logger, reg *rendezvous.Registry) (*server.Server, error) {
	if len(addrs) < 2 {
		return nil, fmt.Errorf("start lab %sserver: the lab server has no %saddresses (a dual-stack kernel lab has)", family, family)
	}
	plan := server.Addrs{Primary: netip.AddrPortFrom(addrs[0], STUNPort), AltIP: addrs[1], AltPort: STUNAltPort}
	srv, err := server.Listen(n, server.Config{Addrs: plan, Logger: log, Rendezvous: reg, TURN: TURNConfig()})
	if err != nil {
		return nil, fmt.Errorf("start lab %sSTUN server: %w", family, err)
	}
	return srv, nil
}

// Run builds the lab, profiles every site against the lab's STUN server,
// compares each profile with its preset and tears the lab down.
func Run(ctx context.Context, o Options) (*Report, error) {
	start := time.Now()
	ev := newEmitter(o.Events)
	topo := o.Topology
	if len(topo.Sites) == 0 {
		var err error
		if topo, err = testnet.PairTopology(o.NATA, o.NATB); err != nil {
			return nil, err
		}
		topo.Segment = o.Segment
	}
	if len(topo.Sites) == 0 {
		return nil, errors.New("lab: no sites: give at least one NAT preset")
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	plan := Plan{Backend: string(cmp.Or(o.Backend, testnet.InProcess))}
	for _, s := range topo.Sites {
		plan.Sites = append(plan.Sites, Site{Name: s.Name, Preset: s.Preset, Expected: s.NAT.Expect()})
	}
	ev.emit(StageLab, fmt.Sprintf("building the %s lab and profiling %d site(s)", plan.Backend, len(plan.Sites)), plan)
	lab, err := testnet.Start(ctx, topo, o.Backend)
	if err != nil {
		return nil, fmt.Errorf("start %s lab: %w", o.Backend, err)
	}
	defer lab.Close()
	srvs, err := StartServers(lab, log)
	if err != nil {
		return nil, err
	}
	defer srvs.Close()
	srv := srvs.Servers[0]
	var sockets6 []netip.AddrPort // the IPv6 server's, in a dual-stack lab
	if len(srvs.Servers) == 2 {
		sockets6 = srvs.Servers[1].Addrs().Sockets()
	}

	primary := netip.AddrPortFrom(lab.Server.Addrs[0], STUNPort).String()
	rep := &Report{
		Schema:        Schema,
		NatlabVersion: buildinfo.Version(),
		Backend:       string(lab.Backend),
		Topology:      string(topo.Segment),
		Match:         true,
	}
	for _, s := range append(srv.Addrs().Sockets(), sockets6...) {
		rep.Server = append(rep.Server, s.String())
	}
	rep.Sites = make([]Site, len(lab.Sites))
	var wg sync.WaitGroup
	for i, site := range lab.Sites {
		rep.Sites[i] = Site{
			Name:     site.Spec.Name,
			Preset:   site.Spec.Preset,
			Public:   site.Public.String(),
			Expected: site.Spec.NAT.Expect(),
		}
		if lab.Backend == testnet.Kernel {
			e := site.Spec.NAT.ExpectTCP()
			rep.Sites[i].ExpectedTCP = &e
		}
		if site.Spec.IPv6 != nil {
			e := site.Spec.Expect6()
			rep.Sites[i].ExpectedIPv6, rep.Sites[i].IPv6Preset, rep.Sites[i].Public6 = &e, site.Spec.IPv6Preset, site.Public6.String()
		}
		wg.Add(1)
		go func(ls *Site, h *testnet.Host, dns64 netip.AddrPort) {
			defer wg.Done()
			profileSites(ctx, ls, natclass.Options{
				Net: h.Net, Servers: []string{primary}, Lifetime: o.Lifetime,
				Logger: log.With("site", ls.Name),
			}, sockets6, dns64)
			msg := fmt.Sprintf("site %s: %s", ls.Name, ls.Error)
			if ls.Profile != nil {
				msg = fmt.Sprintf("site %s: %s (%d mismatches with preset %s)", ls.Name, ls.Profile.NATType, len(ls.Mismatches), ls.Preset)
			}
			ev.emit(StageSite, msg, ls)
		}(&rep.Sites[i], site.Host, site.DNS64)
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	for _, s := range rep.Sites {
		if s.Error != "" || s.IPv6Error != "" || len(s.Mismatches) > 0 {
			rep.Match = false
		}
	}
	if len(lab.Sites) == 2 && !o.NoPair {
		pairSites(ctx, lab, Server6(srvs), rep, ev, log)
	}
	rep.DurationMillis = millis.Since(start)
	return rep, nil
}

// profileSite measures one site and compares its profile with the preset.
func profileSite(ctx context.Context, ls *Site, o natclass.Options) {
	p, err := natclass.Discover(ctx, o)
	if err != nil {
		ls.Error = err.Error()
		return
	}
	ls.Profile = p
	ls.Mismatches = Compare(ls.Expected, p)
	if ls.ExpectedTCP != nil {
		ls.Mismatches = append(ls.Mismatches, CompareTCP(*ls.ExpectedTCP, p.TCP)...)
	}
}

// CompareTCP lists where a measured TCP profile differs from the TCP
// behaviour a preset should have.
func CompareTCP(e testnet.Expected, t *natclass.TCPProfile) []string {
	if t == nil || t.Reached != natclass.Yes {
		return []string{"tcp: want a measured TCP profile, got " + t.Brief()}
	}
	var out []string
	got := natclass.Allocation("")
	if t.PortAllocation != nil {
		got = t.PortAllocation.Pattern
	}
	for _, d := range [][3]string{
		{"tcp mapping", string(e.Mapping), string(t.Mapping)},
		{"tcp filtering", string(e.Filtering), string(t.Filtering)},
		{"tcp port_allocation", string(e.Allocation), string(got)},
	} {
		if d[1] != "" && d[1] != d[2] {
			if d[2] == "" {
				d[2] = "undetermined"
			}
			out = append(out, fmt.Sprintf("%s: want %s, measured %s", d[0], d[1], d[2]))
		}
	}
	return out
}

// Compare lists, in words, where a measured profile differs from what a
// preset should produce. Fields the preset leaves open are not compared.
func Compare(e testnet.Expected, p *natclass.Profile) []string {
	var out []string
	diff := func(field, want, got string) {
		if want != got {
			if got == "" {
				got = "undetermined"
			}
			out = append(out, fmt.Sprintf("%s: want %s, measured %s", field, want, got))
		}
	}
	diff("nat_type", string(e.NATType), string(p.NATType))
	if e.NATType == natclass.UDPBlocked {
		return out
	}
	diff("mapping", string(e.Mapping), string(p.Mapping))
	diff("filtering", string(e.Filtering), string(p.Filtering))
	if e.Allocation != "" {
		got := ""
		if p.PortAllocation != nil {
			got = string(p.PortAllocation.Pattern)
		}
		diff("port_allocation", string(e.Allocation), got)
	}
	if e.Hairpinning != natclass.NotChecked {
		diff("hairpinning", e.Hairpinning.String(), p.Hairpinning.String())
	}
	return out
}

// StartServer6 starts natlab's server (STUN, rendezvous and TURN) on the
// lab server's two IPv6 addresses and both ports, as StartServer does
// over IPv4: TURN relays IPv6 here, for probes' IPv6 relay (RelayConfig6).
func StartServer6(lab *testnet.Lab, log *slog.Logger) (*server.Server, error) {
	return listen(lab.Server.Net, lab.Server.Addrs6, "IPv6 ", log, rendezvous.NewRegistry(nil))
}

// profileSites measures a site over IPv4 and, when it is dual stack,
// over IPv6 against the first of sockets6 at the same time. An IPv6-only
// site (a valid dns64 resolver) learns its NAT64 prefix (RFC 7050) and
// checks the IPv4 server through it.
func profileSites(ctx context.Context, ls *Site, o natclass.Options, sockets6 []netip.AddrPort, dns64 netip.AddrPort) {
	var v6 sync.WaitGroup
	if ls.ExpectedIPv6 != nil && len(sockets6) > 0 {
		o6 := o
		o6.Servers, o6.Family, o6.Lifetime, o6.Logger = []string{sockets6[0].String()}, natclass.IPv6, false, o.Logger.With("family", "ipv6")
		v6.Go(func() {
			if dns64.IsValid() {
				prefix, err := natclass.DiscoverNAT64(ctx, o6.Net, dns64.String())
				if err != nil {
					ls.IPv6Error = err.Error()
					return
				}
				o6.NAT64, o6.Servers = prefix, o.Servers
			}
			profileSite6(ctx, ls, o6)
		})
	}
	if !dns64.IsValid() {
		// An IPv6-only host has no IPv4 route: its IPv4 side is the
		// NAT64's, which the IPv6 check measures.
		profileSite(ctx, ls, o)
	}
	v6.Wait()
	if ls.IPv6 != nil {
		ls.Mismatches = append(ls.Mismatches, Compare6(*ls.ExpectedIPv6, ls.Public6, ls.IPv6)...)
	}
}

// profileSite6 measures a dual-stack site over IPv6 and compares it with
// its IPv6 preset. It runs beside the IPv4 check (their sockets and the
// router's tables are separate); the caller compares once both are done.
func profileSite6(ctx context.Context, ls *Site, o natclass.Options) {
	p, err := natclass.Discover(ctx, o)
	if err != nil {
		ls.IPv6Error = err.Error()
		return
	}
	ls.IPv6 = p
}

// Compare6 lists where an IPv6 profile, UDP and TCP, differs from its
// IPv6 preset and from the address the lab gave the site (public6).
func Compare6(e testnet.Expected6, public6 string, p *natclass.Profile) []string {
	var out []string
	for _, m := range append(Compare(e.Expected, p), CompareTCP(e.TCP, p.TCP)...) {
		out = append(out, "ipv6 "+m)
	}
	if p.Translation != e.Translation {
		out = append(out, fmt.Sprintf("ipv6 translation: want %s, measured %s", e.Translation, cmp.Or(p.Translation, "undetermined")))
	}
	field, mapped := "mapped_address", p.MappedAddress
	if p.NATType == natclass.UDPBlocked && p.TCP != nil {
		// Without UDP the server saw this host over TCP only.
		field, mapped = "tcp mapped_address", p.TCP.MappedAddress
	}
	if ap, err := netip.ParseAddrPort(mapped); err != nil || ap.Addr().String() != public6 {
		out = append(out, fmt.Sprintf("ipv6 %s: want %s, measured %s", field, public6, mapped))
	}
	return out
}

// pairSites probes the lab's two sites together on the running servers
// (over IPv6 too when server6, the IPv6 server, is set) and
// records the pair (or why the backend cannot pair them) in rep.
func pairSites(ctx context.Context, lab *testnet.Lab, server6 string, rep *Report, ev *emitter, log *slog.Logger) {
	a, b := lab.Sites[0].Spec, lab.Sites[1].Spec
	for _, s := range []testnet.SiteSpec{a, b} {
		if why := Exclusion(s.NAT, lab.Backend); why != "" {
			rep.PairSkipped = fmt.Sprintf("site %s: %s", s.Name, why)
			return
		}
	}
	mp := &MatrixPair{A: cmp.Or(a.Preset, a.Name), B: cmp.Or(b.Preset, b.Name)}
	reps, err := pairOn(ctx, lab, server6, log)
	if err != nil {
		mp.Error = err.Error()
		mp.Verdict = probe.Verdict{Summary: "error: " + err.Error()}
	} else {
		mp.fill(reps[0])
	}
	if mp.Error != "" || len(mp.Mismatches) > 0 {
		rep.Match = false
	}
	rep.Pair = mp
	ev.emit(probe.StagePair, fmt.Sprintf("%s × %s: %s", mp.A, mp.B, mp.Verdict.Summary), mp)
}
