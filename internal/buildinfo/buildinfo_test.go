package buildinfo

import (
	"runtime/debug"
	"testing"
)

func TestFromBuildInfo(t *testing.T) {
	vcs := []debug.BuildSetting{
		{Key: "vcs", Value: "git"},
		{Key: "vcs.revision", Value: "4907dffffc35bcaeb835b2f2adfa4aaef9f158cd"},
		{Key: "vcs.time", Value: "2026-12-01T14:39:53Z"},
		{Key: "vcs.modified", Value: "false"},
	}
	dirty := append(append([]debug.BuildSetting{}, vcs[:3]...), debug.BuildSetting{Key: "vcs.modified", Value: "true"})
	tests := []struct {
		name     string
		bi       *debug.BuildInfo
		override string
		want     string // String()
		commit   string
		date     string
	}{
		{"no build info", nil, "", "(devel)", "", ""},
		{"release from the module proxy", &debug.BuildInfo{Main: debug.Module{Path: Module, Version: "v1.2.3"}}, "", "v1.2.3", "", ""},
		{"pseudo-version names its commit once", &debug.BuildInfo{Main: debug.Module{Path: Module, Version: "v0.0.0-20261201143953-4907dffffc35"}, Settings: vcs},
			"", "v0.0.0-20261201143953-4907dffffc35", "4907dffffc35bcaeb835b2f2adfa4aaef9f158cd", "2026-12-01T14:39:53Z"},
		{"devel build with a dirty tree", &debug.BuildInfo{Main: debug.Module{Path: Module, Version: "(devel)"}, Settings: dirty},
			"", "(devel)+4907dffffc35+dirty", "4907dffffc35bcaeb835b2f2adfa4aaef9f158cd", "2026-12-01T14:39:53Z"},
		{"natlab as a dependency", &debug.BuildInfo{Main: debug.Module{Path: "example.com/tool", Version: "v9.0.0"}, Settings: vcs,
			Deps: []*debug.Module{{Path: "golang.org/x/sys", Version: "v0.50.0"}, {Path: Module, Version: "v1.4.0"}}}, "", "v1.4.0", "", ""},
		{"ldflags override", &debug.BuildInfo{Main: debug.Module{Path: Module, Version: "(devel)"}}, "v2.0.0", "v2.0.0", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			i := fromBuildInfo(tt.bi, tt.override)
			if got := i.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
			if i.Commit != tt.commit || i.Date != tt.date {
				t.Errorf("commit, date = %q, %q; want %q, %q", i.Commit, i.Date, tt.commit, tt.date)
			}
			if i.Go == "" || i.OS == "" || i.Arch == "" {
				t.Errorf("Go, OS, Arch empty: %+v", i)
			}
		})
	}
}
