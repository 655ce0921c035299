package cmd

import (
	"fmt"
	"runtime"
)

// labGOOS is the system the lab would run on; tests pretend to be another.
var labGOOS = runtime.GOOS

// labUnsupported refuses `natlab lab` (and its subcommands) off Linux in
// one line with the usage exit code: the kernel backend is network
// namespaces and nftables, and the presets are checked against Linux NAT.
// check, probe and serve are what a laptop needs.
func labUnsupported(goos string) error {
	if goos == "linux" {
		return nil
	}
	return &ExitError{Code: ExitUsage, Err: fmt.Errorf("natlab lab runs on Linux only (network namespaces, nftables); on %s use natlab check, probe and serve", goos)}
}
