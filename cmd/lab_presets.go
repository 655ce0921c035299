package cmd

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/natlab/natlab/internal/buildinfo"
	"github.com/natlab/natlab/testnet"
)

// LabPresetsSchema names the JSON document of `natlab lab presets`.
const LabPresetsSchema = "natlab.lab-presets/v1"

// labPreset is an IPv4 preset and the profile it should produce.
type labPreset struct {
	Name     string           `json:"name"`
	NAT      testnet.NAT      `json:"nat"`
	Expected testnet.Expected `json:"expected"`
}

// labPresetsDocument is `natlab lab presets --json`. IPv6Presets was
// added within v1: a v1 reader that does not know it reads what it
// always read.
type labPresetsDocument struct {
	Schema        string                `json:"schema"`
	NatlabVersion string                `json:"natlab_version"`
	Presets       []labPreset           `json:"presets"`
	IPv6Presets   []testnet.Preset6Info `json:"ipv6_presets"`
}

// labPresets lists both families' presets.
func labPresets() (*labPresetsDocument, error) {
	doc := &labPresetsDocument{Schema: LabPresetsSchema, NatlabVersion: buildinfo.Version()}
	for _, name := range testnet.Presets() {
		n, err := testnet.Preset(name)
		if err != nil {
			return nil, err
		}
		doc.Presets = append(doc.Presets, labPreset{name, n, n.Expect()})
	}
	var err error
	if doc.IPv6Presets, err = testnet.IPv6PresetInfos(); err != nil {
		return nil, err
	}
	return doc, nil
}

func newCmdLabPresets(s IOStreams) *cobra.Command {
	var out outputFlags
	c := &cobra.Command{
		Use:   "presets",
		Short: "List the lab's NAT presets (IPv4, and IPv6 for --ipv6) and the profile each should produce",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			doc, err := labPresets()
			if err != nil {
				return err
			}
			return report(s.Out, out, doc, func(w io.Writer) error { return writeLabPresets(w, doc) })
		},
	}
	addOutputFlags(c, &out)
	return c
}

// writeLabPresets is the text view: the IPv4 table, then the IPv6 one
// with what each router does below it.
func writeLabPresets(w io.Writer, doc *labPresetsDocument) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "preset\tnat_type\tmapping\tfiltering\tports\thairpin")
	for _, p := range doc.Presets {
		e := p.Expected
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", p.Name, e.NATType, orDash(string(e.Mapping)), orDash(string(e.Filtering)), orDash(string(e.Allocation)), e.Hairpinning)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(doc.IPv6Presets) == 0 {
		return nil
	}
	fmt.Fprintf(w, "\nIPv6 (natlab lab --kernel --ipv6; each site is %s for IPv4)\n", doc.IPv6Presets[0].IPv4Preset)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "preset\tnat_type\ttranslation\tmapping\tfiltering\tports\ttcp")
	for _, p := range doc.IPv6Presets {
		e, t := p.Expected, p.Expected.TCP
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Name, e.NATType, e.Translation, orDash(string(e.Mapping)), orDash(string(e.Filtering)), orDash(string(e.Allocation)),
			strings.Join([]string{t.Mapping.Abbrev("M"), t.Filtering.Abbrev("F"), string(t.Allocation)}, " "))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, p := range doc.IPv6Presets {
		fmt.Fprintf(tw, "%s\t%s\n", p.Name, p.Router)
	}
	return tw.Flush()
}
