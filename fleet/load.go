package fleet

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/portmap"
	"github.com/natlab/natlab/probe"
)

// Document schemas fleet reads.
const (
	checkSchema = "natlab.check/v1"
	probeSchema = probe.ProbeSchema
)

// document is the part of a check or probe document fleet needs, plus
// the two fields a fleet may add to it.
type document struct {
	Schema      string            `json:"schema"`
	Profile     *natclass.Profile `json:"profile"` // check
	Self        *natclass.Profile `json:"self"`    // probe
	PortMapping *portmap.Report   `json:"port_mapping"`
	// Weight is the users or traffic behind the host (default 1).
	Weight *float64 `json:"weight"`
	// TCP says whether the host can try TCP at all (default true: a
	// host that ran natlab has a TCP stack; the in-process lab has none).
	TCP *bool `json:"tcp"`
}

// host turns a document into a fleet host.
func (d *document) host() (Host, error) {
	p := d.Profile
	switch d.Schema {
	case checkSchema:
	case probeSchema:
		p = d.Self
	case "":
		return Host{}, errors.New(`no "schema": want natlab check --json or natlab probe --json documents`)
	default:
		return Host{}, fmt.Errorf("schema %q: want %s or %s", d.Schema, checkSchema, probeSchema)
	}
	if p == nil {
		return Host{}, fmt.Errorf("%s document without a profile", d.Schema)
	}
	tcp := d.TCP == nil || *d.TCP
	h := Host{Summary: probe.HostSummary(p, d.PortMapping, tcp), LifetimeS: lifetimeOf(p)}
	if d.Weight != nil {
		if *d.Weight <= 0 {
			return Host{}, fmt.Errorf("weight %v: want a positive number", *d.Weight)
		}
		h.Weight = *d.Weight
	}
	return h, nil
}

// lifetimeOf is the lifetime a direct path's mapping has: the one
// measured after traffic both ways when there is one, else the idle one.
func lifetimeOf(p *natclass.Profile) float64 {
	if p.EstablishedLifetimeS != nil {
		return *p.EstablishedLifetimeS
	}
	if p.BindingLifetimeS != nil {
		return *p.BindingLifetimeS
	}
	return 0
}

// Decode reads JSON documents from r — one document, JSON lines, or
// documents one after another — and adds each as a host. name labels
// errors ("hosts.jsonl: document 3: ...").
func Decode(r io.Reader, name string, add func(Host) error) error {
	dec := json.NewDecoder(bufio.NewReaderSize(r, 1<<16))
	for n := 1; ; n++ {
		var d document
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			if n == 1 {
				return fmt.Errorf("%s: no documents", name)
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: document %d: %w", name, n, err)
		}
		h, err := d.host()
		if err == nil {
			err = add(h)
		}
		if err != nil {
			return fmt.Errorf("%s: document %d: %w", name, n, err)
		}
	}
}

// isDocFile: the files a directory contributes.
func isDocFile(name string) bool {
	return strings.HasSuffix(name, ".json") || strings.HasSuffix(name, ".jsonl") || strings.HasSuffix(name, ".ndjson")
}

// Load reads every path: a file, a directory (its *.json, *.jsonl and
// *.ndjson files, recursively, in name order), or "-" for stdin.
func Load(ctx context.Context, paths []string, stdin io.Reader, add func(Host) error) error {
	for _, p := range paths {
		if err := ctx.Err(); err != nil {
			return err
		}
		if p == "-" {
			if err := Decode(stdin, "stdin", add); err != nil {
				return err
			}
			continue
		}
		err := filepath.WalkDir(p, func(path string, e fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if e.IsDir() || (path != p && !isDocFile(e.Name())) {
				return ctx.Err()
			}
			return loadFile(path, add)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func loadFile(path string, add func(Host) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return Decode(f, path, add)
}

// ParseRate reads a bit rate: a number with an optional k, M or G
// (powers of 1000) and an optional "bit/s", "bps" or "b/s": "64k",
// "1.5M", "2Mbit/s", "800000".
func ParseRate(s string) (float64, error) {
	t := strings.TrimSpace(s)
	for _, suf := range []string{"bit/s", "bps", "b/s"} {
		t = strings.TrimSuffix(t, suf)
	}
	mult := 1.0
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'k', 'K':
			mult = 1e3
		case 'M':
			mult = 1e6
		case 'G':
			mult = 1e9
		}
		if mult != 1 {
			t = t[:n-1]
		}
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(t), 64)
	if err != nil || v <= 0 || math.IsInf(v, 0) {
		return 0, fmt.Errorf("rate %q: want a positive bit rate such as 64k, 1.5M or 2Mbit/s", s)
	}
	return v * mult, nil
}

// FormatRate prints a bit rate with an SI prefix: "6 Gbit/s".
func FormatRate(bps float64) string {
	for _, u := range []struct {
		div  float64
		unit string
	}{{1e12, "Tbit/s"}, {1e9, "Gbit/s"}, {1e6, "Mbit/s"}, {1e3, "kbit/s"}} {
		if bps >= u.div {
			return fmt.Sprintf("%.3g %s", bps/u.div, u.unit)
		}
	}
	return fmt.Sprintf("%.0f bit/s", bps)
}
