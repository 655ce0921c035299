//go:build linux

package cmd_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/natlab/natlab/lab"
	"github.com/natlab/natlab/testnet"
)

// labUpBound bounds the whole test: build, two labs up, a check, down.
const labUpBound = 2 * time.Minute

// TestLabUpExecDown uses the lab as a user would: `lab up` returns while
// the lab stays, `lab exec` runs programs on its hosts (natlab check
// finds the preset through real NAT; exit statuses pass through), `lab
// clean` keeps it, `lab down` removes everything; a lab whose holding
// process was killed is swept by `lab down`.
func TestLabUpExecDown(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("kernel lab needs root or CAP_NET_ADMIN")
	}
	ctx, cancel := context.WithTimeout(context.Background(), labUpBound)
	defer cancel()
	bin := natlabBinary(t)
	run := func(args ...string) (string, int) {
		out, err := exec.CommandContext(ctx, bin, args...).Output()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return string(out), ee.ExitCode()
		}
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		return string(out), 0
	}
	up := func() lab.State {
		out, code := run("lab", "up", "--kernel", "--nat-a", "port-restricted-cone", "--nat-b", "symmetric", "--delay", "5ms", "--json")
		var st lab.State
		if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil {
			t.Fatalf("lab up: exit %d, %v: %s", code, err, out)
		}
		t.Cleanup(func() { _ = exec.Command(bin, "lab", "down", st.Name).Run() })
		return st
	}
	st := up()
	if st.Schema != lab.UpSchema || st.NatlabVersion == "" || len(st.Server) != 4 || len(st.Sites) != 2 || st.Sites[0].DelayMS != 5 {
		t.Errorf("lab up: %+v", st)
	}
	out, code := run("lab", "exec", st.Name, "a", "--", bin, "check", "--json", "--server", st.Server[0])
	var doc struct {
		Profile struct {
			NATType string `json:"nat_type"`
		} `json:"profile"`
	}
	if err := json.Unmarshal([]byte(out), &doc); code != 0 || err != nil || doc.Profile.NATType != "port-restricted-cone" {
		t.Errorf("check on host a: exit %d, %v, nat type %q", code, err, doc.Profile.NATType)
	}
	if _, code := run("lab", "exec", st.Name, "b", "sh", "-c", "exit 7"); code != 7 {
		t.Errorf("exec exit status %d, want 7", code)
	}
	// Other labs' leftovers on a shared machine may fail `lab clean`;
	// what matters here is that the live lab survives it.
	if _, _ = run("lab", "clean"); !nsExists(st) {
		t.Error("lab clean removed the live lab")
	}
	if out, code := run("lab", "down", st.Name); code != 0 || nsExists(st) || processAlive(st.PID) || filesLeft(st.Name) {
		t.Errorf("lab down: exit %d %s; namespaces left %v, process alive %v, files left %v", code, out, nsExists(st), processAlive(st.PID), filesLeft(st.Name))
	}
	if _, code := run("lab", "down", st.Name); code != 1 {
		t.Errorf("second lab down: exit %d, want 1", code)
	}

	// A crashed holder: exec refuses, down sweeps.
	st = up()
	if err := syscall.Kill(st.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Its threads end after the leader shows as a zombie; the lock goes
	// with the last.
	for end := time.Now().Add(5 * time.Second); (processAlive(st.PID) || testnet.Live(st.Name)) && time.Now().Before(end); {
		time.Sleep(10 * time.Millisecond)
	}
	if _, code := run("lab", "exec", st.Name, "a", "true"); code != 1 {
		t.Errorf("exec in a crashed lab: exit %d, want 1", code)
	}
	if out, code := run("lab", "down", st.Name); code != 0 || nsExists(st) || filesLeft(st.Name) {
		t.Errorf("lab down of a crashed lab: exit %d %s; namespaces left %v", code, out, nsExists(st))
	}
}

func nsExists(st lab.State) bool {
	for _, ns := range st.Namespaces {
		if _, err := os.Stat(filepath.Join("/run/netns", ns)); err == nil {
			return true
		}
	}
	return false
}

// processAlive reports whether pid runs (a zombie, waiting for an
// orphan reaper, does not).
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] != 'Z'
}

func filesLeft(name string) bool {
	m, _ := filepath.Glob(filepath.Join("/run/natlab", name+".*"))
	return len(m) > 0
}
