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

// CleanLab has nothing to remove either.
func CleanLab(context.Context, string) ([]string, error) { return nil, nil }

// No kernel lab runs here, so none is live and none has files.
func Live(string) bool { return false }

// StatePath and LogPath name no file where no kernel lab can run.
func StatePath(string) string { return "" }

// LogPath: see StatePath.
func LogPath(string) string { return "" }
