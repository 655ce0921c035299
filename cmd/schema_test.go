package cmd

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/natlab/natlab/fleet"
	"github.com/natlab/natlab/internal/buildinfo"
	"github.com/natlab/natlab/lab"
	"github.com/natlab/natlab/natclass"
	"github.com/natlab/natlab/probe"
	"github.com/natlab/natlab/rendezvous"
	"github.com/natlab/natlab/testnet"
)

// The JSON views are a contract: these tests decode what the commands
// print, strictly, into the documented structs, and check the enums.

// syncBuffer is a bytes.Buffer safe to read while a command writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// decodeStrict decodes exactly one JSON value into v, refusing fields v
// does not have.
func decodeStrict(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return fmt.Errorf("trailing data after the JSON value")
	}
	return nil
}

// requireKeys checks that raw has every key: omitting a documented
// field is a schema change too.
func requireKeys(t *testing.T, what string, raw []byte, keys ...string) {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	for _, k := range keys {
		if _, ok := m[k]; !ok {
			t.Errorf("%s: required field %q missing in %s", what, k, raw)
		}
	}
}

// The enums of the schema, as documented in the README.
var (
	natTypes   = set("open", "full-cone", "restricted-cone", "port-restricted-cone", "symmetric", "symmetric-firewall", "udp-blocked", "unknown")
	behaviours = set("", "endpoint-independent", "address-dependent", "address-and-port-dependent")
	outcomes   = set("success", "fail", "skipped")
	// A prediction may also be "unknown": a side's TCP profile was not measured.
	predictions = set("success", "fail", "skipped", "unknown")
	techniques  = set("same-lan", "udp", "udp-predict", "udp-birthday", "udp-portmap", "tcp", "relay-udp", "relay-tcp")
	stages      = set("profile", "pair", "path", "technique", "relay", "verdict", "lab", "site", "matrix")
)

func set(xs ...string) map[string]bool {
	m := map[string]bool{}
	for _, x := range xs {
		m[x] = true
	}
	return m
}

func checkEnum(t *testing.T, what, v string, allowed map[string]bool) {
	t.Helper()
	if !allowed[v] {
		t.Errorf("%s = %q: not a documented value", what, v)
	}
}

func checkProfile(t *testing.T, what string, p *natclass.Profile) {
	t.Helper()
	if p == nil {
		t.Errorf("%s: no profile", what)
		return
	}
	checkEnum(t, what+".nat_type", string(p.NATType), natTypes)
	checkEnum(t, what+".mapping", string(p.Mapping), behaviours)
	checkEnum(t, what+".filtering", string(p.Filtering), behaviours)
	if p.TCP == nil {
		t.Errorf("%s: no tcp profile", what)
		return
	}
	checkEnum(t, what+".tcp.mapping", string(p.TCP.Mapping), behaviours)
	checkEnum(t, what+".tcp.filtering", string(p.TCP.Filtering), behaviours)
	if p.TCP.Reached != natclass.Yes && len(p.TCP.NotRun) == 0 {
		t.Errorf("%s.tcp: not reached, and no not_run says why", what)
	}
}

func checkTechniques(t *testing.T, what string, ts []probe.TechniqueResult) {
	t.Helper()
	if len(ts) == 0 {
		t.Errorf("%s: no techniques", what)
	}
	for _, tr := range ts {
		checkEnum(t, what+".technique", string(tr.Technique), techniques)
		checkEnum(t, what+".predicted", string(tr.Predicted), predictions)
		checkEnum(t, what+".measured", string(tr.Measured), outcomes)
	}
}

func checkReport(t *testing.T, raw []byte) *probe.Report {
	t.Helper()
	var r probe.Report
	if err := decodeStrict(raw, &r); err != nil {
		t.Fatalf("report does not decode strictly into probe.Report: %v\n%s", err, raw)
	}
	requireKeys(t, "probe report", raw, "schema", "natlab_version", "side", "server", "self", "peer", "techniques", "verdict", "duration_ms")
	if r.Schema != probe.ProbeSchema {
		t.Errorf("schema %q, want %q", r.Schema, probe.ProbeSchema)
	}
	if r.NatlabVersion != buildinfo.Version() {
		t.Errorf("natlab_version %q, want %q", r.NatlabVersion, buildinfo.Version())
	}
	checkEnum(t, "side", r.Side, set("A", "B"))
	checkProfile(t, "self", r.Self)
	checkEnum(t, "peer.nat_type", string(r.Peer.NATType), natTypes)
	checkTechniques(t, "techniques", r.Techniques)
	if r.Verdict.Summary == "" {
		t.Error("verdict.summary is empty")
	}
	return &r
}

func checkLab(t *testing.T, raw []byte) {
	t.Helper()
	var r lab.Report
	if err := decodeStrict(raw, &r); err != nil {
		t.Fatalf("lab report does not decode strictly into lab.Report: %v\n%s", err, raw)
	}
	requireKeys(t, "lab report", raw, "schema", "natlab_version", "backend", "server", "sites", "match", "duration_ms")
	if r.Schema != lab.Schema || len(r.Sites) == 0 {
		t.Errorf("schema %q with %d sites", r.Schema, len(r.Sites))
	}
	if r.NatlabVersion != buildinfo.Version() {
		t.Errorf("natlab_version %q, want %q", r.NatlabVersion, buildinfo.Version())
	}
	checkEnum(t, "backend", r.Backend, set("in-process", "kernel"))
	for _, s := range r.Sites {
		checkProfile(t, "site "+s.Name, s.Profile)
	}
}

// TestLabJSONSchema: `natlab lab --json` (in-process) is one natlab.lab/v1
// document; jq agrees it has a schema, when jq is installed.
func TestLabJSONSchema(t *testing.T) {
	skipWithoutLab(t)
	var out, errOut bytes.Buffer
	root := NewRootCmd(IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
	root.SetArgs([]string{"lab", "--json", "--nat-a", "full-cone", "--nat-b", "symmetric"})
	if err := root.ExecuteContext(context.Background()); err != nil {
		t.Fatalf("natlab lab --json: %v\n%s", err, errOut.String())
	}
	checkLab(t, out.Bytes())
	if _, err := exec.LookPath("jq"); err != nil {
		t.Log("jq is not installed (apt-get install jq): checked with encoding/json only")
		return
	}
	jq := exec.Command("jq", "-e", ".schema")
	jq.Stdin = bytes.NewReader(out.Bytes())
	got, err := jq.Output()
	if err != nil {
		t.Fatalf("jq -e .schema: %v", err)
	}
	if strings.TrimSpace(string(got)) != `"natlab.lab/v1"` {
		t.Errorf("jq -e .schema = %s", got)
	}
}

// TestLabEventsSchema: `natlab lab --events` is JSON lines of events, the
// report last.
func TestLabEventsSchema(t *testing.T) {
	skipWithoutLab(t)
	var out, errOut bytes.Buffer
	root := NewRootCmd(IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
	root.SetArgs([]string{"lab", "--events", "--nat-a", "full-cone", "--nat-b", "restricted-cone"})
	if err := root.ExecuteContext(context.Background()); err != nil {
		t.Fatalf("natlab lab --events: %v\n%s", err, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) < 2 {
		t.Fatalf("want events then the report, got %q", out.String())
	}
	for _, l := range lines[:len(lines)-1] {
		checkEvent(t, []byte(l))
	}
	checkLab(t, []byte(lines[len(lines)-1]))
}

func checkEvent(t *testing.T, raw []byte) probe.Event {
	t.Helper()
	var e probe.Event
	if err := decodeStrict(raw, &e); err != nil {
		t.Fatalf("event does not decode strictly into probe.Event: %v\n%s", err, raw)
	}
	requireKeys(t, "event", raw, "time", "stage", "message", "elapsed_ms")
	checkEnum(t, "event.stage", string(e.Stage), stages)
	if e.Outcome != "" {
		checkEnum(t, "event.outcome", string(e.Outcome), outcomes)
	}
	data, _ := json.Marshal(e.Data)
	switch {
	case e.Stage == "technique" && e.Outcome != "":
		var tr probe.TechniqueResult
		if err := decodeStrict(data, &tr); err != nil {
			t.Errorf("technique event data: %v\n%s", err, data)
		}
		checkTechniques(t, "event.data", []probe.TechniqueResult{tr})
	case e.Stage == "profile" && strings.Contains(string(data), `"nat_type"`):
		var p natclass.Profile
		if err := decodeStrict(data, &p); err != nil {
			t.Errorf("profile event data: %v\n%s", err, data)
		}
		checkProfile(t, "event.data", &p)
	case e.Stage == "pair" && e.Data != nil && strings.Contains(string(data), `"nat_type"`):
		var s natclass.Summary
		if err := decodeStrict(data, &s); err != nil {
			t.Errorf("pair event data: %v\n%s", err, data)
		}
		checkEnum(t, "peer nat_type", string(s.NATType), natTypes)
	case e.Stage == "verdict":
		var v probe.Verdict
		if err := decodeStrict(data, &v); err != nil {
			t.Errorf("verdict event data: %v\n%s", err, data)
		}
	}
	return e
}

// labProbes starts an in-process lab with a server and returns a function
// that runs `natlab probe` with args on one site's host.
func labProbes(t *testing.T, ctx context.Context, a, b string) func(ctx context.Context, site int, out, errOut *syncBuffer, args ...string) error {
	t.Helper()
	topo, err := testnet.PairTopology(a, b)
	if err != nil {
		t.Fatal(err)
	}
	tl, err := testnet.Start(ctx, topo, testnet.InProcess)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tl.Close() })
	srv, err := lab.StartServer(tl, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	server := netip.AddrPortFrom(tl.Server.Addr(), lab.STUNPort).String()
	return func(ctx context.Context, site int, out, errOut *syncBuffer, args ...string) error {
		s := IOStreams{In: strings.NewReader(""), Out: out, ErrOut: errOut}
		c := NewCmdProbe(s, func(ctx context.Context, o *ProbeOptions) error {
			o.Net = tl.Sites[site].Host.Net
			return runProbe(ctx, o)
		})
		c.SetArgs(append([]string{"--server", server}, args...))
		c.SetOut(out)
		c.SetErr(errOut)
		return c.ExecuteContext(ctx)
	}
}

// TestProbeEventsSchema: two `natlab probe --events` in the in-process lab;
// every line decodes strictly, the last is the report.
func TestProbeEventsSchema(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	run := labProbes(t, ctx, "full-cone", "port-restricted-cone")
	code, err := rendezvous.NewCode()
	if err != nil {
		t.Fatal(err)
	}
	type res struct {
		out *syncBuffer
		err error
	}
	results := make(chan res, 2)
	for site := range 2 {
		go func() {
			out := &syncBuffer{}
			err := run(ctx, site, out, &syncBuffer{}, "--events", "--code", code)
			results <- res{out, err}
		}()
	}
	for range 2 {
		r := <-results
		if r.err != nil {
			t.Fatalf("natlab probe --events: %v", r.err)
		}
		lines := strings.Split(strings.TrimSpace(r.out.String()), "\n")
		var sawTechnique bool
		for _, l := range lines[:len(lines)-1] {
			if e := checkEvent(t, []byte(l)); e.Stage == "technique" && e.Outcome != "" {
				sawTechnique = true
			}
		}
		if !sawTechnique {
			t.Error("no technique outcome among the events")
		}
		rep := checkReport(t, []byte(lines[len(lines)-1]))
		if !rep.Verdict.Direct {
			t.Errorf("full-cone × port-restricted-cone: %s", rep.Verdict.Summary)
		}
	}
}

// TestREADMEJSONExamples decodes every ```json block under the README's
// "## JSON schemas" strictly into the struct its "schema" names.
func TestREADMEJSONExamples(t *testing.T) {
	path := "../README.md"
	if p := os.Getenv("NATLAB_README"); p != "" {
		path = p // check a draft before it replaces the README
	}
	readme, err := os.ReadFile(path)
	if err != nil {
		t.Skipf("no README: %v", err)
	}
	if len(jsonBlocks(string(readme), "## JSON schemas")) == 0 {
		t.Skip("README.md has no ```json examples under \"## JSON schemas\" yet: nothing to check")
	}
	// Examples elsewhere (under each command) are held to the same
	// contract.
	blocks := jsonBlocks(string(readme), "")
	targets := map[string]func() any{
		CheckSchema:       func() any { return &checkDocument{} },
		lab.Schema:        func() any { return &lab.Report{} },
		probe.ProbeSchema: func() any { return &probe.Report{} },
		lab.MatrixSchema:  func() any { return &lab.MatrixReport{} },
		"natlab.serve/v1": func() any { return &serveStatus{} },
		fleet.Schema:      func() any { return &fleet.Report{} },
		VersionSchema:     func() any { return &versionDocument{} },
		LabPresetsSchema:  func() any { return &labPresetsDocument{} },
	}
	checked := 0
	for i, b := range blocks {
		// A block may hold several values (an --events stream).
		d := json.NewDecoder(strings.NewReader(b))
		for n := 0; d.More(); n++ {
			var raw json.RawMessage
			if err := d.Decode(&raw); err != nil {
				t.Errorf("README json block %d, value %d: not JSON: %v", i+1, n+1, err)
				break
			}
			var head struct {
				Schema string `json:"schema"`
				Stage  string `json:"stage"`
			}
			_ = json.Unmarshal(raw, &head)
			var v any
			switch {
			case head.Schema != "" && targets[head.Schema] != nil:
				v = targets[head.Schema]()
			case head.Schema == "" && head.Stage != "":
				v = &probe.Event{}
			default:
				t.Logf("README json block %d: schema %q has no struct to check against", i+1, head.Schema)
				continue
			}
			if err := decodeStrict(raw, v); err != nil {
				t.Errorf("README json block %d (%s): does not decode strictly into %T: %v", i+1, head.Schema, v, err)
			}
			if head.Schema != "" {
				// Every document's header names the build that wrote it.
				requireKeys(t, fmt.Sprintf("README json block %d (%s)", i+1, head.Schema), raw, "natlab_version")
			}
			checked++
		}
	}
	if checked == 0 {
		t.Skip("README's json blocks name no known schema")
	}
}

var fenceRE = regexp.MustCompile("^```(\\w*)\\s*$")

// jsonBlocks returns the ```json fenced blocks of the section that starts
// with the heading line, up to the next heading of the same level; an
// empty heading means the whole document.
func jsonBlocks(md, heading string) []string {
	level := strings.SplitN(heading, " ", 2)[0] + " "
	var blocks []string
	var cur *strings.Builder
	in := heading == ""
	sc := bufio.NewScanner(strings.NewReader(md))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if cur == nil && !strings.HasPrefix(line, "```") && strings.HasPrefix(line, "#") {
			switch {
			case heading == "":
			case strings.TrimSpace(line) == heading:
				in = true
				continue
			case in && strings.HasPrefix(line, level):
				in = false
			}
		}
		if !in {
			continue
		}
		if m := fenceRE.FindStringSubmatch(line); m != nil {
			switch {
			case cur != nil:
				blocks = append(blocks, cur.String())
				cur = nil
			case m[1] == "json":
				cur = &strings.Builder{}
			}
			continue
		}
		if cur != nil {
			cur.WriteString(line + "\n")
		}
	}
	return blocks
}

func TestJSONBlocks(t *testing.T) {
	md := "# t\n## Other\n```json\n{\"a\":1}\n```\n## JSON schemas\ntext\n```json\n{\"schema\":\"x\"}\n```\n```sh\nls\n```\n### sub\n```json\n[1]\n```\n## Next\n```json\n{}\n```\n"
	got := jsonBlocks(md, "## JSON schemas")
	if len(got) != 2 || got[0] != "{\"schema\":\"x\"}\n" || got[1] != "[1]\n" {
		t.Errorf("jsonBlocks = %q", got)
	}
	if all := jsonBlocks(md, ""); len(all) != 4 {
		t.Errorf("jsonBlocks(whole) = %q", all)
	}
}
