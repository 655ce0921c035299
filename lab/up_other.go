//go:build !linux

package lab

import (
	"context"
	"io"
	"os/exec"

	"github.com/natlab/natlab/testnet"
)

// HoldOptions configure Hold.
type HoldOptions struct {
	Topology testnet.Topology
}

// Hold needs the kernel lab, which needs Linux.
func Hold(context.Context, HoldOptions, func(State) error) error { return testnet.ErrKernelNeedsLinux }

// WriteReady: see Hold.
func WriteReady(io.Writer) func(State) error {
	return func(State) error { return testnet.ErrKernelNeedsLinux }
}

// WriteFailed: see Hold.
func WriteFailed(io.Writer, error) {}

// Up: see Hold.
func Up(context.Context, []string) (State, error) { return State{}, testnet.ErrKernelNeedsLinux }

// Find: see Hold.
func Find(string) (State, error) { return State{}, testnet.ErrKernelNeedsLinux }

// Down: see Hold.
func Down(context.Context, string) error { return testnet.ErrKernelNeedsLinux }

// ExecCommand: see Hold.
func ExecCommand(context.Context, string, string, []string) (*exec.Cmd, error) {
	return nil, testnet.ErrKernelNeedsLinux
}
