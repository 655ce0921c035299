//go:build linux

package testnet

import (
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// A kernel lab that outlives the command that asked for it (`natlab lab
// up`) is held by a process; its description sits next to its lock file,
// so other commands find it by name, and Clean and teardown remove it.

// labFileSuffixes are the files named after a lab besides its lock.
var labFileSuffixes = []string{".json", ".log"}

// StatePath is where the description of kernel lab id is kept.
func StatePath(id string) string { return filepath.Join(lockDir, id+".json") }

// LogPath is where the process holding kernel lab id writes its log.
func LogPath(id string) string { return filepath.Join(lockDir, id+".log") }

// Live reports whether a running process holds kernel lab id.
func Live(id string) bool {
	f, err := os.OpenFile(filepath.Join(lockDir, id+".lock"), os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return true
	}
	_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
	return false
}

func removeLabFiles(id string) {
	for _, s := range labFileSuffixes {
		_ = os.Remove(filepath.Join(lockDir, id+s))
	}
}
