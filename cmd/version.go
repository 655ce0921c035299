package cmd

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/natlab/natlab/internal/buildinfo"
)

func init() { subcommandFns = append(subcommandFns, newCmdVersion) }

// VersionSchema versions the --json document of `natlab version`.
const VersionSchema = "natlab.version/v1"

// versionDocument is `natlab version --json`.
type versionDocument struct {
	Schema        string `json:"schema"`         // VersionSchema
	NatlabVersion string `json:"natlab_version"` // as in every document's header
	buildinfo.Info
}

func newCmdVersion(s IOStreams) *cobra.Command {
	var out outputFlags
	c := &cobra.Command{
		Use:   "version",
		Short: "Print natlab's version, commit and Go toolchain",
		Long: `Print the module version, the commit it was built from and that commit's time
(from the Go build info), and the Go toolchain and platform. Every JSON
document natlab prints names the same version in its natlab_version field.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if out.JSON {
				return writeJSON(s.Out, versionDocument{VersionSchema, buildinfo.Version(), buildinfo.Get()})
			}
			return writeVersion(s.Out, buildinfo.Get())
		},
	}
	addOutputFlags(c, &out)
	return c
}

// writeVersion is the text of `natlab version` and `natlab --version`.
func writeVersion(w io.Writer, i buildinfo.Info) error {
	commit := "unknown (built without VCS information)"
	if i.Commit != "" {
		commit = i.Commit
		if i.Date != "" {
			commit += " (" + i.Date + ")"
		}
		if i.Modified {
			commit += ", with uncommitted changes"
		}
	}
	_, err := fmt.Fprintf(w, "natlab %s\ncommit  %s\nbuilt   with %s for %s/%s\n", i.Version, commit, i.Go, i.OS, i.Arch)
	return err
}
