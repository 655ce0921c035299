package testnet

import (
	"context"
	"errors"
	"runtime"
	"testing"
)

func TestKernelNeedsLinuxSkipsLikeMissingPrivileges(t *testing.T) {
	for _, target := range []error{ErrKernelNeedsLinux, ErrNeedPrivileges, ErrNotSupported} {
		if !errors.Is(ErrKernelNeedsLinux, target) {
			t.Errorf("errors.Is(ErrKernelNeedsLinux, %v) = false", target)
		}
	}
	if errors.Is(ErrNeedPrivileges, ErrKernelNeedsLinux) {
		t.Error("a privilege error must not claim the system is not Linux")
	}
	if runtime.GOOS == "linux" {
		return
	}
	topo, err := PairTopology("full-cone", "full-cone")
	if err != nil {
		t.Fatal(err)
	}
	lab, err := Start(context.Background(), topo, Kernel)
	if err == nil {
		_ = lab.Close()
		t.Fatalf("kernel lab started on %s", runtime.GOOS)
	}
	if !errors.Is(err, ErrKernelNeedsLinux) {
		t.Errorf("Start(kernel) on %s: %v; want ErrKernelNeedsLinux", runtime.GOOS, err)
	}
}
