package probe_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestAgentDependencies: the agent that runs on users' hosts carries
// neither natlab's server nor the lab (nor the lab's netlink and nftables
// libraries), so it builds everywhere and stays small. The dependencies
// read cmd → lab → {probe, server, testnet}.
func TestAgentDependencies(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command to list the dependencies: %v", err)
	}
	out, err := exec.Command(goBin, "list", "-deps", "github.com/natlab/natlab/probe").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"github.com/natlab/natlab/server", "github.com/natlab/natlab/testnet", "github.com/natlab/natlab/lab",
			"github.com/google/nftables", "github.com/vishvananda"} {
			if dep == banned || strings.HasPrefix(dep, banned+"/") {
				t.Errorf("probe depends on %s", dep)
			}
		}
	}
}
