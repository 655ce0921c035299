package tui

import (
	"fmt"
	"strings"

	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"

	"github.com/natlab/natlab/natclass"
)

// truncate cuts one line to w cells, marking the cut.
func truncate(s string, w int) string {
	if w <= 0 {
		return ""
	}
	return ansi.Truncate(s, w, "…")
}

// fit cuts a block to w×h: long lines are truncated; when there are too
// many, blank separator lines go first (from the bottom), then lines from
// the bottom (screens put what matters most first).
func fit(s string, w, h int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i := len(lines) - 1; i > 0 && h >= 0 && len(lines) > h; i-- {
		if strings.TrimSpace(lines[i]) == "" {
			lines = append(lines[:i], lines[i+1:]...)
		}
	}
	if h >= 0 && len(lines) > h {
		lines = lines[:h]
	}
	for i, l := range lines {
		lines[i] = strings.TrimRight(truncate(l, w), " ")
	}
	return strings.Join(lines, "\n")
}

// pad right-pads s to w cells (ANSI-aware).
func pad(s string, w int) string {
	if n := lipgloss.Width(s); n < w {
		return s + strings.Repeat(" ", w-n)
	}
	return s
}

// columns lays blocks side by side, each cut to colW cells.
func columns(colW int, blocks ...[]string) []string {
	n := 0
	for _, b := range blocks {
		n = max(n, len(b))
	}
	out := make([]string, n)
	for i := range n {
		var parts []string
		for j, b := range blocks {
			cell := ""
			if i < len(b) {
				cell = truncate(b[i], colW)
			}
			if j < len(blocks)-1 {
				cell = pad(cell, colW)
			}
			parts = append(parts, cell)
		}
		out[i] = strings.TrimRight(strings.Join(parts, "  "), " ")
	}
	return out
}

// ports describes a port allocation pattern.
func ports(a natclass.Allocation, step int) string {
	switch {
	case a == "":
		return "ports ?"
	case a == natclass.Sequential:
		return fmt.Sprintf("ports sequential%+d", step)
	}
	return "ports " + string(a)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// banner boxes the line a person reads first, wrapped to the window.
func banner(style lipgloss.Style, text string, width int) string {
	return style.Width(max(width-2, 10)).Render(text)
}

// bars is a horizontal bar chart of labelled values in milliseconds, the
// longest bar filling the space the labels leave.
func bars(width int, rows []barRow) []string {
	maxV := 0.0
	for _, r := range rows {
		maxV = max(maxV, r.value)
	}
	const labelW, valueW = 20, 11
	barW := max(width-labelW-valueW-2, 5)
	var out []string
	for _, r := range rows {
		n := 1
		if maxV > 0 {
			n = max(int(r.value/maxV*float64(barW)+0.5), 1)
		}
		out = append(out, pad(r.label, labelW)+r.style.Render(strings.Repeat("█", n))+
			strings.Repeat(" ", barW-n)+fmt.Sprintf(" %8.1f ms", r.value))
	}
	return out
}

type barRow struct {
	label string
	value float64
	style lipgloss.Style
}
