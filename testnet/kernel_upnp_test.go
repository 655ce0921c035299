//go:build linux

package testnet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestPresetPortMappingSuffix(t *testing.T) {
	n, err := Preset("symmetric" + PortMappingSuffix)
	if err != nil || !n.PortMapping {
		t.Errorf("symmetric+upnp: %+v, %v", n, err)
	}
	n, err = Preset("double-nat" + PortMappingSuffix)
	if err != nil || n.PortMapping || n.Inner == nil || !n.Inner.PortMapping {
		t.Errorf("double-nat+upnp: port mapping belongs on the inner (home) NAT: %+v, %v", n, err)
	}
	if base, _ := Preset("double-nat"); base.Inner.PortMapping {
		t.Errorf("Preset shares its Inner between calls")
	}
	if _, err := Preset("nope+upnp"); err == nil {
		t.Errorf("unknown preset with the suffix accepted")
	}
	for _, bad := range []string{"open+upnp"} {
		topo, err := PairTopology(bad, "")
		if err != nil {
			t.Fatal(err)
		}
		if err := checkKernelPortMapping(topo); !errors.Is(err, ErrNotSupported) {
			t.Errorf("%s: %v, want ErrNotSupported", bad, err)
		}
	}
	cgn := Topology{Sites: []SiteSpec{{Name: "a", NAT: NAT{Mapping: "endpoint-independent", PortMapping: true,
		Inner: &NAT{Mapping: "endpoint-independent"}}}}}
	if err := checkKernelPortMapping(cgn); !errors.Is(err, ErrNotSupported) {
		t.Errorf("port mapping on a CGN: %v, want ErrNotSupported", err)
	}
}

// upnpLeftovers lists miniupnpd processes and files of lab id.
func upnpLeftovers(t *testing.T, id string) (procs, dirs []string) {
	t.Helper()
	mark := "natlab-upnp-" + id + "-"
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), mark) {
			procs = append(procs, e.Name()+": "+strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	dirs, _ = filepath.Glob(filepath.Join(os.TempDir(), mark+"*"))
	return procs, dirs
}

// netnsOf names the lab namespace process pid is in.
func netnsOf(t *testing.T, pid, id string) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join("/proc", pid, "ns", "net"), &st); err != nil {
		return "?"
	}
	names, _ := filepath.Glob(filepath.Join(netnsDir, nsPrefix+id+"-*"))
	for _, n := range names {
		var ns unix.Stat_t
		if unix.Stat(n, &ns) == nil && ns.Ino == st.Ino && ns.Dev == st.Dev {
			return filepath.Base(n)
		}
	}
	return "?"
}

func skipWithoutUPnPLab(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("kernel lab: needs root")
	}
	if _, err := miniupnpdPath(); err != nil {
		t.Skipf("kernel lab with port mapping: %v", err)
	}
}

func TestKernelUPnPStopsOnClose(t *testing.T) {
	skipWithoutUPnPLab(t)
	topo, err := PairTopology("symmetric"+PortMappingSuffix, "double-nat"+PortMappingSuffix)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lab, err := Start(ctx, topo, Kernel)
	if errors.Is(err, ErrNeedPrivileges) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	id := strings.TrimPrefix(strings.TrimSuffix(lab.Site("a").Router.Namespace, "-a-r"), nsPrefix)
	procs, dirs := upnpLeftovers(t, id)
	if len(procs) != 2 || len(dirs) != 2 {
		t.Errorf("want one miniupnpd per site (the double NAT's on its home router), got %q, %q", procs, dirs)
	}
	// Each runs in the namespace of the router that holds the host's LAN.
	var where []string
	for _, p := range procs {
		pid, _, _ := strings.Cut(p, ":")
		where = append(where, netnsOf(t, pid, id))
	}
	slices.Sort(where)
	if want := []string{nsPrefix + id + "-a-r", nsPrefix + id + "-b-in"}; !slices.Equal(where, want) {
		t.Errorf("miniupnpd runs in %q, want %q", where, want)
	}
	if err := lab.Close(); err != nil {
		t.Fatal(err)
	}
	if procs, dirs := upnpLeftovers(t, id); len(procs)+len(dirs) > 0 {
		t.Errorf("left after Close: %q, %q", procs, dirs)
	}
}

func TestKernelUPnPStopsOnStartError(t *testing.T) {
	skipWithoutUPnPLab(t)
	topo, err := PairTopology("symmetric"+PortMappingSuffix, "")
	if err != nil {
		t.Fatal(err)
	}
	var id string
	var seen struct{ procs, dirs []string }
	kernelStartHook = func(labID, stage string) error {
		if stage != "site a" {
			return nil
		}
		id = labID
		seen.procs, seen.dirs = upnpLeftovers(t, id)
		return errors.New("injected failure")
	}
	t.Cleanup(func() { kernelStartHook = nil })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = Start(ctx, topo, Kernel)
	if errors.Is(err, ErrNeedPrivileges) {
		t.Skip(err)
	}
	if err == nil || id == "" {
		t.Fatalf("Start = %v, want the injected failure", err)
	}
	if len(seen.procs) != 1 {
		t.Errorf("miniupnpd was not running when start failed: %q", seen.procs)
	}
	if procs, dirs := upnpLeftovers(t, id); len(procs)+len(dirs) > 0 {
		t.Errorf("left after a failed Start: %q, %q", procs, dirs)
	}
}

const upnpCrashChildEnv = "NATLAB_KERNEL_UPNP_CRASH_CHILD"

// TestKernelUPnPDiesWithProcess checks that a lab process that dies without
// Close (kill -9, a crash) takes its miniupnpd with it.
func TestKernelUPnPDiesWithProcess(t *testing.T) {
	topo, err := PairTopology("symmetric"+PortMappingSuffix, "")
	if err != nil {
		t.Fatal(err)
	}
	if os.Getenv(upnpCrashChildEnv) == "1" {
		lab, err := Start(context.Background(), topo, Kernel)
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(2)
		}
		fmt.Println("id:", strings.TrimPrefix(strings.TrimSuffix(lab.Site("a").Router.Namespace, "-a-r"), nsPrefix))
		os.Exit(0) // no Close
	}
	skipWithoutUPnPLab(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestKernelUPnPDiesWithProcess$")
	cmd.Env = append(os.Environ(), upnpCrashChildEnv+"=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	_, id, ok := strings.Cut(strings.TrimSpace(string(out)), "id: ")
	if !ok {
		t.Fatalf("child printed %q", out)
	}
	t.Cleanup(func() {
		_, _ = Clean(context.Background())
		_, dirs := upnpLeftovers(t, id)
		for _, d := range dirs {
			_ = os.RemoveAll(d)
		}
	})
	deadline := time.Now().Add(2 * time.Second) // SIGKILL is delivered at once; exit takes a moment
	for {
		procs, _ := upnpLeftovers(t, id)
		if len(procs) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("miniupnpd outlived its lab's process: %q", procs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
