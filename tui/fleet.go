package tui

import (
	"fmt"
	"slices"
	"strings"

	"github.com/charmbracelet/lipgloss"

	"github.com/natlab/natlab/fleet"
	"github.com/natlab/natlab/natclass"
)

// fleetScreen is `natlab fleet`'s screen: the shares, and the NAT type ×
// NAT type table as a heat map of the direct share.
type fleetScreen struct {
	report *fleet.Report
}

func (s *fleetScreen) done(r *fleet.Report) { s.report = r }

// fleetNames are the NAT types as short row labels.
var fleetNames = map[natclass.NATType]string{
	natclass.Open: "open", natclass.FullCone: "full-cone", natclass.RestrictedCone: "restricted",
	natclass.PortRestrictedCone: "port-restricted", natclass.Symmetric: "symmetric",
	natclass.SymmetricFirewall: "sym-firewall", natclass.UDPBlocked: "udp-blocked", natclass.Unknown: "unknown",
}

// heat is a cell's background from its direct share: red (all relayed)
// through yellow to green (all direct). The share is printed in the cell,
// so nothing depends on the colour.
func heat(direct float64) lipgloss.Style {
	ramp := []string{"124", "160", "166", "172", "178", "142", "106", "70", "34", "28"}
	i := min(int(direct*float64(len(ramp))), len(ramp)-1)
	return lipgloss.NewStyle().Background(lipgloss.Color(ramp[i])).Foreground(lipgloss.Color("15"))
}

func pct(v float64) string { return fmt.Sprintf("%.1f%%", 100*v) }

// splitBar is one line: the direct share as a bar, the relay share as
// the rest, both named in words.
func splitBar(width int, direct float64) string {
	left, right := "direct "+pct(direct)+" ", " relay "+pct(1-direct)
	w := max(width-len(left)-len(right), 10)
	n := int(direct*float64(w) + 0.5)
	return left + directBar.Render(strings.Repeat("█", n)) + relayBar.Render(strings.Repeat("░", w-n)) + right
}

func (s *fleetScreen) view(v view) string {
	out := []string{titleStyle.Render(v.title)}
	r := s.report
	switch {
	case r == nil && v.err != nil:
		return strings.Join(append(out, failStyle.Render("✗")+" "+v.err.Error()), "\n")
	case r == nil:
		return strings.Join(append(out, v.spin+" reading profiles"), "\n")
	}
	out = append(out, fmt.Sprintf("%d hosts · %d pairs · %d classes", r.Hosts, r.Pairs, r.Classes), "")
	if r.Pairs == 0 {
		return strings.Join(append(out, "fewer than two hosts: no pairs to predict"), "\n")
	}
	out = append(out, splitBar(v.width, r.DirectShare))
	line := fmt.Sprintf("relay over UDP %s · over TCP only %s · no path %s", pct(r.Relay.UDP), pct(r.Relay.TCPOnly), pct(r.Relay.NoPath))
	if r.TrafficBps > 0 {
		line += " · " + fleet.FormatRate(r.RelayBandwidthBps) + " relayed"
	}
	out = append(out, line)
	if k := r.Keepalive; k != nil {
		out = append(out, fmt.Sprintf("staying direct: %.0f keepalive packets/h per direct UDP pair", k.PacketsPerHourPerPair))
	}
	if r.UnknownShare > 0 {
		out = append(out, warnStyle.Render(fmt.Sprintf("unknown %s: a host's TCP profile was not measured", pct(r.UnknownShare))))
	}
	out = append(out, "")
	out = append(out, s.grid()...)
	if len(r.ByNATType) > 0 && r.ByNATType[0].ShareOfRelay > 0 {
		t := r.ByNATType[0]
		out = append(out, "", fmt.Sprintf("%s hosts (%s) are in %s of the relayed pairs", t.NATType, pct(t.HostShare), pct(t.ShareOfRelay)))
	}
	return strings.Join(out, "\n")
}

// grid is the heat map: each cell the share of its pairs that go direct.
func (s *fleetScreen) grid() []string {
	var types []natclass.NATType
	for _, t := range fleet.NATTypes {
		if slices.ContainsFunc(s.report.Cells, func(c fleet.Cell) bool { return c.A == t || c.B == t }) {
			types = append(types, t)
		}
	}
	head := fmt.Sprintf("%-18s", "direct share")
	for i := range types {
		head += fmt.Sprintf("%7c", 'A'+i)
	}
	out := []string{headerStyle.Render(head)}
	for i, a := range types {
		row := fmt.Sprintf("%c %-16s", 'A'+i, fleetNames[a])
		for _, b := range types {
			c := s.cell(a, b)
			if c == nil {
				row += fmt.Sprintf("%7s", "-")
				continue
			}
			row += " " + heat(c.DirectShare).Render(fmt.Sprintf("%5.0f%%", 100*c.DirectShare))
		}
		out = append(out, row)
	}
	return out
}

func (s *fleetScreen) cell(a, b natclass.NATType) *fleet.Cell {
	for i, c := range s.report.Cells {
		if (c.A == a && c.B == b) || (c.A == b && c.B == a) {
			return &s.report.Cells[i]
		}
	}
	return nil
}
