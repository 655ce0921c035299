//go:build windows

package sockopt

import (
	"fmt"
	"syscall"
)

// Reuse sets SO_REUSEADDR, which on Windows alone lets a listener and
// connecting sockets share one local address (there is no SO_REUSEPORT).
func Reuse(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(syscall.Handle(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
	})
	if err != nil {
		return fmt.Errorf("reuse control: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("set SO_REUSEADDR: %w", serr)
	}
	return nil
}
