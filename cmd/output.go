package cmd

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

// outputFlags are shared by every command: one helper so that --json means
// the same everywhere.
type outputFlags struct {
	JSON bool
}

func addOutputFlags(c *cobra.Command, o *outputFlags) {
	c.Flags().BoolVar(&o.JSON, "json", false, "print one JSON document (versioned by its \"schema\" field) instead of text")
}

// writeJSON prints v as indented JSON followed by a newline.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("encode JSON: %w", err)
	}
	return nil
}

// writeJSONLine prints v as one line of JSON (for event streams).
func writeJSONLine(w io.Writer, v any) error {
	if err := json.NewEncoder(w).Encode(v); err != nil {
		return fmt.Errorf("encode JSON: %w", err)
	}
	return nil
}
