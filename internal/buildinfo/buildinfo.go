// Package buildinfo says which build of natlab is running: the module
// version, the commit and its time, read from the Go build info the
// toolchain embeds (runtime/debug), so every JSON document can name the
// build that produced it.
package buildinfo

import (
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
)

// Module is natlab's module path.
const Module = "github.com/natlab/natlab"

// version, when set with -ldflags "-X github.com/natlab/natlab/internal/buildinfo.version=v1.2.3",
// overrides the module version: a build from a source archive (a
// container build without .git) has no other way to know it.
var version string

// Info describes this build.
type Info struct {
	// Version is the module version: a release tag (v1.2.3), a
	// pseudo-version for a build from a git checkout, or "(devel)".
	Version string `json:"version"`
	// Commit is the VCS revision (vcs.revision), "" when the build had no
	// VCS information (go install from the module proxy, -buildvcs=false).
	Commit string `json:"commit,omitempty"`
	// Date is the commit's time (vcs.time), RFC 3339: the Go build info
	// records no build time, which keeps builds reproducible.
	Date string `json:"date,omitempty"`
	// Modified says the work tree had uncommitted changes (vcs.modified).
	Modified bool   `json:"modified,omitempty"`
	Go       string `json:"go"`
	OS       string `json:"os"`
	Arch     string `json:"arch"`
}

// Get returns this build's information (read once).
var Get = sync.OnceValue(func() Info {
	bi, _ := debug.ReadBuildInfo()
	return fromBuildInfo(bi, version)
})

// Version is the string every JSON document carries as natlab_version:
// the module version, with the short commit and "+dirty" appended when the
// version does not already say which commit it is.
func Version() string { return Get().String() }

// fromBuildInfo reads natlab's version whether natlab is the main module
// or a dependency of another program; override, if set, wins.
func fromBuildInfo(bi *debug.BuildInfo, override string) Info {
	i := Info{Version: "(devel)", Go: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH}
	if bi != nil {
		if bi.GoVersion != "" {
			i.Go = bi.GoVersion
		}
		if bi.Main.Path == Module {
			i.Version = nonEmpty(bi.Main.Version, i.Version)
			for _, s := range bi.Settings {
				switch s.Key {
				case "vcs.revision":
					i.Commit = s.Value
				case "vcs.time":
					i.Date = s.Value
				case "vcs.modified":
					i.Modified = s.Value == "true"
				}
			}
		} else {
			for _, d := range bi.Deps {
				if d.Path == Module {
					i.Version = nonEmpty(d.Version, i.Version)
				}
			}
		}
	}
	i.Version = nonEmpty(override, i.Version)
	return i
}

func nonEmpty(s, fallback string) string {
	if s == "" {
		return fallback
	}
	return s
}

// String is the one-word version: "v1.2.3", a pseudo-version, or
// "(devel)+4907dffffc35+dirty" for a local build.
func (i Info) String() string {
	s := i.Version
	if c := shortCommit(i.Commit); c != "" && !strings.Contains(s, c) {
		s += "+" + c
	}
	if i.Modified && !strings.HasSuffix(s, "+dirty") {
		s += "+dirty"
	}
	return s
}

// shortCommit is the 12-character prefix pseudo-versions use.
func shortCommit(c string) string {
	if len(c) > 12 {
		return c[:12]
	}
	return c
}
