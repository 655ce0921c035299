package cmd

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestLabFlagErrors: what the lab cannot do is a usage error naming the
// fix, pointing to the subcommand's help.
func TestLabFlagErrors(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"lab", "--nat-a", "full-cone+upnp"}, "add --kernel"},
		{[]string{"lab", "--matrix", "--delay", "10ms"}, "not --matrix"},
		{[]string{"lab", "--loss", "0.9"}, "--loss 0.9"},
		{[]string{"lab", "--delay", "-1s"}, "--delay"},
		{[]string{"lab", "up", "--nat-a", "symmetric"}, "in-process lab lives inside one process"},
		{[]string{"lab", "down", "nope"}, "six hex digits"},
		{[]string{"lab", "exec", "abc123", "c"}, "requires at least 3"},
	} {
		s, _, errOut := testStreams()
		code := Main(tt.args, s)
		cmdPath := "natlab " + strings.Join(tt.args[:1], " ")
		if tt.args[1] == "up" || tt.args[1] == "down" || tt.args[1] == "exec" {
			cmdPath += " " + tt.args[1]
		}
		if code != ExitUsage || !strings.Contains(errOut.String(), tt.want) || !strings.Contains(errOut.String(), "Run '"+cmdPath+" --help'") {
			t.Errorf("%v: exit %d, stderr %q; want %d, %q and %s's help", tt.args, code, errOut, ExitUsage, tt.want, cmdPath)
		}
	}
}

// TestLabMatrixRestricted: --matrix with --nat-a/--nat-b pairs only those
// presets (each with itself and the other).
func TestLabMatrixRestricted(t *testing.T) {
	s, out, errOut := testStreams()
	if code := Main([]string{"lab", "--matrix", "--json", "--nat-a", "full-cone", "--nat-b", "restricted-cone"}, s); code != ExitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var rep struct {
		Pairs []struct{ A, B string } `json:"pairs"`
	}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range rep.Pairs {
		got = append(got, p.A+"×"+p.B)
	}
	if strings.Join(got, " ") != "full-cone×full-cone full-cone×restricted-cone restricted-cone×restricted-cone" {
		t.Errorf("pairs %v, want the two presets' three", got)
	}
}

// TestErrorDocument: a failed command run with --json prints one JSON
// document with the error and the exit code; --events ends its stream
// with it; without either, stdout stays empty.
func TestErrorDocument(t *testing.T) {
	for _, tt := range []struct {
		args  []string
		code  int
		lines bool // --events: the document is the last line
	}{
		{[]string{"check", "--json", "--portmap=false", "--server", "127.0.0.1:9"}, ExitNoPath, false},
		{[]string{"check", "--json", "--server", "foo"}, ExitUsage, false},
		{[]string{"probe", "--events", "--server", "127.0.0.1:9"}, ExitNoPath, true},
		{[]string{"lab", "--json", "--nat-a", "full-cone+upnp"}, ExitUsage, false},
	} {
		s, out, errOut := testStreams()
		code := Main(tt.args, s)
		text := strings.TrimSpace(out.String())
		if tt.lines {
			text = text[strings.LastIndex(text, "\n")+1:]
		}
		var doc errorDocument
		if err := json.Unmarshal([]byte(text), &doc); err != nil || code != tt.code || doc.Schema != ErrorSchema ||
			doc.ExitCode != tt.code || doc.Error == "" || !strings.Contains(errOut.String(), doc.Error) {
			t.Errorf("%v: exit %d, document %+v (%v) from %q; stderr %q", tt.args, code, doc, err, out, errOut)
		}
	}
	s, out, _ := testStreams()
	if Main([]string{"check", "--portmap=false", "--server", "127.0.0.1:9"}, s); out.Len() != 0 {
		t.Errorf("without --json: stdout %q", out)
	}
}
