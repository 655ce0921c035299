package cmd

import (
	"os"
	"strings"
)

// Environment variables that carry secrets, so that they stay off the
// command line (visible in ps and kept in shell history).
const (
	// EnvTURNPassword is the TURN password of `natlab probe --turn-user`.
	EnvTURNPassword = "NATLAB_TURN_PASSWORD"
	// EnvAuthSecret is the TURN REST API shared secret: the relay's for
	// `natlab serve`, the credentials' for `natlab probe`.
	EnvAuthSecret = "NATLAB_AUTH_SECRET"
)

// secretSource is one secret's three sources: a flag (visible in ps, kept
// for scripts), a file flag, and an environment variable used when
// neither flag is given.
type secretSource struct {
	flag, value    string // e.g. "--turn-password" and its value
	fileFlag, file string // e.g. "--turn-password-file" and its value
	env            string // e.g. EnvTURNPassword; "" for none
}

// resolve returns the secret, "" when no source gives one. The flag and
// the file flag are exclusive; a file holds the secret on its first line.
func (s secretSource) resolve() (string, error) {
	switch {
	case s.value != "" && s.file != "":
		return "", flagErrorf("%s and %s: give one", s.flag, s.fileFlag)
	case s.value != "":
		return s.value, nil
	case s.file != "":
		b, err := os.ReadFile(s.file)
		if err != nil {
			return "", flagErrorf("%s: %v", s.fileFlag, err)
		}
		line, _, _ := strings.Cut(string(b), "\n")
		if line = strings.TrimSpace(line); line == "" {
			return "", flagErrorf("%s %s: the first line is empty", s.fileFlag, s.file)
		}
		return line, nil
	case s.env != "":
		return strings.TrimSpace(os.Getenv(s.env)), nil
	}
	return "", nil
}
