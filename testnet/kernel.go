package testnet

import "context"

// startKernel is replaced by the kernel backend.
func startKernel(ctx context.Context, t Topology) (*Lab, error) { return nil, ErrNotSupported }
