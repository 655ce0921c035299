package testnet

import "context"

// startInProcess is replaced by the in-process backend.
func startInProcess(ctx context.Context, t Topology) (*Lab, error) { return nil, ErrNotSupported }
