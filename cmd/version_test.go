package cmd

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/natlab/natlab/internal/buildinfo"
)

// skipWithoutLab skips a test that runs `natlab lab` where the lab is
// refused (off Linux), saying so.
func skipWithoutLab(t *testing.T) {
	t.Helper()
	if err := labUnsupported(runtime.GOOS); err != nil {
		t.Skipf("%v", err)
	}
}

func TestVersionCommand(t *testing.T) {
	s, out, errOut := testStreams()
	if code := Main([]string{"version", "--json"}, s); code != 0 {
		t.Fatalf("natlab version --json: exit %d: %s", code, errOut)
	}
	var doc versionDocument
	if err := decodeStrict(out.Bytes(), &doc); err != nil {
		t.Fatalf("natlab version --json: %v\n%s", err, out)
	}
	want := buildinfo.Get()
	if doc.Schema != VersionSchema || doc.NatlabVersion != buildinfo.Version() || doc.Info != want {
		t.Errorf("natlab version --json = %+v, want %s with %+v", doc, VersionSchema, want)
	}
	requireKeys(t, "version", out.Bytes(), "schema", "natlab_version", "version", "go", "os", "arch")

	s, text, _ := testStreams()
	if code := Main([]string{"version"}, s); code != 0 {
		t.Fatalf("natlab version: exit %d", code)
	}
	if !strings.HasPrefix(text.String(), "natlab "+want.Version+"\n") || !strings.Contains(text.String(), runtime.GOOS+"/"+runtime.GOARCH) {
		t.Errorf("natlab version:\n%s", text)
	}
	s, flag, _ := testStreams()
	if code := Main([]string{"--version"}, s); code != 0 || flag.String() != text.String() {
		t.Errorf("natlab --version (exit %d):\n%s\nwant what natlab version prints:\n%s", code, flag, text)
	}
	if code := Main([]string{"version", "extra"}, s); code != ExitUsage {
		t.Errorf("natlab version extra: exit %d, want %d", code, ExitUsage)
	}
}

// TestLabRefusedOffLinux: elsewhere `natlab lab` and its subcommands say
// so in one line and exit 2.
func TestLabRefusedOffLinux(t *testing.T) {
	defer func(g string) { labGOOS = g }(labGOOS)
	for _, goos := range []string{"darwin", "windows", "freebsd"} {
		labGOOS = goos
		for _, args := range [][]string{{"lab"}, {"lab", "--matrix", "--json"}, {"lab", "presets"}, {"lab", "clean"}} {
			s, out, errOut := testStreams()
			code := Main(args, s)
			msg := errOut.String()
			// With --json stdout is the error document, else nothing.
			wantOut := 0
			if slices.Contains(args, "--json") {
				var doc errorDocument
				if err := json.Unmarshal(out.Bytes(), &doc); err != nil || doc.ExitCode != ExitUsage {
					t.Errorf("%s: natlab %s --json: stdout %q, want the error document", goos, strings.Join(args, " "), out)
				}
				wantOut = out.Len()
			}
			if code != ExitUsage || out.Len() != wantOut || strings.Count(msg, "\n") != 1 ||
				!strings.Contains(msg, "Linux only") || !strings.Contains(msg, goos) {
				t.Errorf("%s: natlab %s: exit %d, stdout %q, stderr %q; want exit 2 and one line", goos, strings.Join(args, " "), code, out, msg)
			}
		}
	}
	labGOOS = "linux"
	s, out, errOut := testStreams()
	if code := Main([]string{"lab", "presets", "--json"}, s); code != 0 {
		t.Fatalf("linux: natlab lab presets: exit %d: %s", code, errOut)
	}
	var doc struct {
		Schema        string `json:"schema"`
		NatlabVersion string `json:"natlab_version"`
	}
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil || doc.Schema != "natlab.lab-presets/v1" || doc.NatlabVersion != buildinfo.Version() {
		t.Errorf("natlab lab presets --json header: %+v, %v", doc, err)
	}
}

// TestVersionOfBuiltBinary builds natlab as a release would and reads the
// version back from the binary: the -ldflags override (a source-archive
// build), and the commit from the Go build info when git is there.
func TestVersionOfBuiltBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "natlab")
	build := exec.Command("go", "build", "-buildvcs=auto", "-o", bin,
		"-ldflags", "-X github.com/natlab/natlab/internal/buildinfo.version=v9.8.7-test", "github.com/natlab/natlab/cmd/natlab")
	build.Env = append(build.Environ(), "GOFLAGS=")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build natlab: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version", "--json").Output()
	if err != nil {
		t.Fatalf("natlab version --json: %v", err)
	}
	var doc versionDocument
	if err := decodeStrict(out, &doc); err != nil {
		t.Fatalf("natlab version --json: %v\n%s", err, out)
	}
	if doc.Version != "v9.8.7-test" || !strings.HasPrefix(doc.NatlabVersion, "v9.8.7-test") {
		t.Errorf("version %q, natlab_version %q; want v9.8.7-test", doc.Version, doc.NatlabVersion)
	}
	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	switch {
	case doc.Commit == "":
		// A git worktree (.git is a file) or no git: the toolchain
		// stamps nothing.
		t.Logf("no VCS information in this build (git: %v)", err)
	case err == nil && doc.Commit != strings.TrimSpace(string(head)):
		t.Errorf("commit %q, want HEAD %s", doc.Commit, head)
	}
	flag, err := exec.Command(bin, "--version").Output()
	if err != nil || !strings.HasPrefix(string(flag), "natlab v9.8.7-test\n") {
		t.Errorf("natlab --version: %q, %v", flag, err)
	}
}
