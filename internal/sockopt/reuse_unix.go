//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package sockopt

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// Reuse sets SO_REUSEADDR and SO_REUSEPORT, so a listener and connecting
// sockets can share one local address: a TCP simultaneous open, and the
// TCP behaviour tests, need SYNs to leave from a port something listens on.
func Reuse(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); serr != nil {
			return
		}
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	})
	if err != nil {
		return fmt.Errorf("reuse control: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("set SO_REUSEADDR/SO_REUSEPORT: %w", serr)
	}
	return nil
}
