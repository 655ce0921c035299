package testnet

import (
	"errors"
	"fmt"
	"regexp"
)

// ErrNoLab is returned for a lab name that names no lab.
var ErrNoLab = errors.New("no such lab")

// validID is what the kernel backend's lab IDs look like.
var validID = regexp.MustCompile(`^[0-9a-f]{6}$`)

// CheckID checks that id could name a kernel lab (six hex digits).
func CheckID(id string) error {
	if !validID.MatchString(id) {
		return fmt.Errorf("lab name %q: want six hex digits, as `natlab lab up` prints", id)
	}
	return nil
}
