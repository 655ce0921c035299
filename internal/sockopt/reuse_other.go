//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly || windows)

package sockopt

import (
	"errors"
	"syscall"
)

// Reuse fails: this platform has no way natlab knows to share a local
// address between a listener and connecting sockets.
func Reuse(_, _ string, _ syscall.RawConn) error {
	return errors.New("sharing a local port between a listener and connections is not supported on this platform")
}
