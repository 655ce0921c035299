// Package deploy holds the container image, the systemd unit and the
// static build they share; its tests check them on this host: the binary
// the image ships is static and serves as an unprivileged user, and the
// unit passes systemd's own checks.
package deploy

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

const testVersion = "v0.0.0-deploytest"

// staticBinary builds natlab as the Dockerfile does, with build-static.sh.
func staticBinary(t *testing.T) string {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("the image's binary is linux; build-static.sh runs in a Linux container")
	}
	bin := filepath.Join(t.TempDir(), "natlab")
	cmd := exec.Command("sh", "build-static.sh", bin)
	cmd.Env = append(os.Environ(), "VERSION="+testVersion)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build-static.sh: %v\n%s", err, out)
	}
	return bin
}

// TestStaticBinaryServesUnprivileged: the image's binary has no dynamic
// loader or libraries, and `natlab serve` runs as the image's user with no
// capabilities and no_new_privs (what the container and the systemd unit
// give it), then stops cleanly on SIGTERM.
func TestStaticBinaryServesUnprivileged(t *testing.T) {
	bin := staticBinary(t)
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary has an ELF interpreter: not static")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("the binary needs %v: not static", libs)
	}
	f.Close()

	args := []string{bin, "serve", "--listen", "127.0.0.1:0", "--json"}
	if os.Geteuid() == 0 {
		// As root, drop to the image's user the way the runtime does.
		if _, err := exec.LookPath("setpriv"); err != nil {
			t.Skip("setpriv not installed (Debian package util-linux)")
		}
		if err := os.Chmod(filepath.Dir(bin), 0o755); err != nil {
			t.Fatal(err)
		}
		args = append([]string{"setpriv", "--reuid=65532", "--regid=65532", "--clear-groups",
			"--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"}, args...)
	} else {
		t.Log("not root: running as this unprivileged user")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Scan()
		line <- sc.Text()
		for sc.Scan() {
		}
	}()
	var status struct {
		Schema        string   `json:"schema"`
		NatlabVersion string   `json:"natlab_version"`
		Listening     []string `json:"listening"`
	}
	select {
	case l := <-line:
		if err := json.Unmarshal([]byte(l), &status); err != nil || status.Schema != "natlab.serve/v1" ||
			status.NatlabVersion != testVersion || len(status.Listening) == 0 {
			t.Errorf("start-up line %q (%v); want natlab.serve/v1 from %s", l, err, testVersion)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("no start-up line in 10 s; stderr: %s", stderr.String())
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("natlab serve after SIGTERM: %v; stderr: %s", err, stderr.String())
	}
}

// TestDockerfile: the image builds with build-static.sh, runs as a
// non-root user and documents natlab serve's ports.
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(b)
	if !regexp.MustCompile(`(?m)^RUN .*sh deploy/build-static\.sh /out/natlab$`).MatchString(df) {
		t.Error("the image does not build with deploy/build-static.sh (what this test checks)")
	}
	users := regexp.MustCompile(`(?m)^USER (\S+)$`).FindAllStringSubmatch(df, -1)
	if len(users) == 0 || slices.Contains([]string{"root", "0", "0:0", "root:root"}, users[len(users)-1][1]) {
		t.Errorf("USER %v: the image must run as a non-root user", users)
	}
	m := regexp.MustCompile(`(?m)^EXPOSE (.+)$`).FindStringSubmatch(df)
	if m == nil {
		t.Fatal("no EXPOSE")
	}
	exposed := strings.Fields(m[1])
	for _, p := range []string{"3478/udp", "3478/tcp", "3479/udp", "3479/tcp", "5349/tcp"} {
		if !slices.Contains(exposed, p) {
			t.Errorf("EXPOSE %v lacks %s", exposed, p)
		}
	}
	if !strings.Contains(df, `CMD ["serve", "--listen", "0.0.0.0:3478"]`) {
		t.Error("the image's default command is not natlab serve on port 3478")
	}
}

// TestSystemdUnit runs systemd-analyze verify on the unit (with ExecStart
// pointing at a freshly built binary, since verify checks it exists) and
// holds its sandbox to an exposure of at most 2.0 of 10.
func TestSystemdUnit(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze not installed (Debian package systemd): the unit is not verified")
	}
	bin := staticBinary(t)
	unit, err := os.ReadFile("natlab-serve.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"DynamicUser=yes", "CapabilityBoundingSet=\n", "NoNewPrivileges=yes", "ProtectSystem=strict"} {
		if !bytes.Contains(unit, []byte(want)) {
			t.Errorf("the unit lacks %q", strings.TrimSpace(want))
		}
	}
	path := filepath.Join(t.TempDir(), "natlab-serve.service")
	unit = bytes.ReplaceAll(unit, []byte("/usr/local/bin/natlab"), []byte(bin))
	if err := os.WriteFile(path, unit, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "systemd-analyze", "verify", path).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	out, err = exec.CommandContext(ctx, "systemd-analyze", "security", "--offline=true", "--threshold=20", path).CombinedOutput()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		t.Errorf("systemd-analyze security: exposure above 2.0:\n%s", out)
	case err != nil:
		t.Skipf("systemd-analyze security --offline: %v (systemd before 250?)", err)
	default:
		t.Logf("%s", lastLine(out))
	}
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

// TestGoReleaserConfig runs `goreleaser check` on .goreleaser.yaml when
// goreleaser is installed, and checks its targets are the ones .ci/run
// cross-builds.
func TestGoReleaserConfig(t *testing.T) {
	cfg, err := os.ReadFile("../.goreleaser.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ci, err := os.ReadFile("../.ci/run")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^targets="([^"]+)"$`).FindSubmatch(ci)
	if m == nil {
		t.Fatal(".ci/run has no targets= line")
	}
	ciTargets := strings.Fields(string(m[1]))
	slices.Sort(ciTargets)
	if got := releaseTargets(string(cfg)); !slices.Equal(got, ciTargets) {
		t.Errorf(".goreleaser.yaml builds %v, .ci/run cross-builds %v", got, ciTargets)
	}
	bin, err := exec.LookPath("goreleaser")
	if err != nil {
		out, _ := exec.Command("go", "env", "GOPATH").Output()
		bin = filepath.Join(strings.TrimSpace(string(out)), "bin", "goreleaser")
		if _, err := os.Stat(bin); err != nil {
			t.Skip("goreleaser not installed (go install github.com/goreleaser/goreleaser/v2@v2.17.0): the configuration is not checked by it")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	check := exec.CommandContext(ctx, bin, "check")
	check.Dir = ".."
	if out, err := check.CombinedOutput(); err != nil {
		t.Errorf("goreleaser check: %v\n%s", err, out)
	}
}

// releaseTargets reads the builds' goos × goarch minus ignore from
// .goreleaser.yaml (flow lists, as the file writes them), sorted.
func releaseTargets(cfg string) []string {
	list := func(key string) []string {
		m := regexp.MustCompile(`(?m)^\s+` + key + `: \[([^\]]*)\]`).FindStringSubmatch(cfg)
		if m == nil {
			return nil
		}
		return strings.Fields(strings.ReplaceAll(m[1], ",", " "))
	}
	ignored := map[string]bool{}
	for _, m := range regexp.MustCompile(`goos: (\w+)\n\s+goarch: (\w+)`).FindAllStringSubmatch(cfg, -1) {
		ignored[m[1]+"/"+m[2]] = true
	}
	var ts []string
	for _, goos := range list("goos") {
		for _, arch := range list("goarch") {
			if !ignored[goos+"/"+arch] {
				ts = append(ts, goos+"/"+arch)
			}
		}
	}
	slices.Sort(ts)
	return ts
}
