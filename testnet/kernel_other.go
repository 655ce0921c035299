//go:build !linux

package testnet

import (
	"context"
	"fmt"
	"runtime"
)

func startKernel(context.Context, Topology) (*Lab, error) {
	return nil, fmt.Errorf("%s: %w", runtime.GOOS, ErrKernelNeedsLinux)
}

// Clean has nothing to remove where no kernel lab can run.
func Clean(context.Context) ([]string, error) { return nil, nil }
