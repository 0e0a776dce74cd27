// Package report turns what the operator knows (a MeshInstallation's status, the ladder's plan,
// a namespace's Events) into what `kubectl meshwright` shows: a structure for -o json|yaml, and
// text for an 80-column terminal, with colours only when it is one. It is pure: the plugin
// reads the cluster, this package only formats, so every output is tested with golden files.
package report

import (
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"
)

// Width is the terminal width the text is laid out for.
const Width = 80

// Style says how text is drawn.
type Style struct {
	// Color turns on ANSI colours (for a terminal; never in a pipe or a file).
	Color bool
}

const (
	green  = "32"
	red    = "31"
	yellow = "33"
	bold   = "1"
	dim    = "2"
)

func (s Style) paint(code, text string) string {
	if !s.Color || text == "" {
		return text
	}
	return "\x1b[" + code + "m" + text + "\x1b[0m"
}

// mark is the checklist box of a condition status.
func (s Style) mark(status string) string {
	switch status {
	case "True":
		return s.paint(green, "✓")
	case "False":
		return s.paint(red, "✗")
	}
	return s.paint(yellow, "…")
}

// printer writes lines and remembers the first error, so formatting code reads straight.
type printer struct {
	w   io.Writer
	err error
}

func (p *printer) line(format string, args ...any) {
	if p.err == nil {
		_, p.err = fmt.Fprintln(p.w, strings.TrimRight(fmt.Sprintf(format, args...), " "))
	}
}

// wrapped writes text wrapped at Width, each line indented by indent spaces.
func (p *printer) wrapped(indent int, text string) {
	for _, l := range wrap(text, Width-indent) {
		p.line("%s%s", strings.Repeat(" ", indent), l)
	}
}

// wrap breaks text into lines of at most width runes, at spaces; a word longer than width
// stays whole on a line of its own.
func wrap(text string, width int) []string {
	var lines []string
	var cur strings.Builder
	for _, word := range strings.Fields(text) {
		if cur.Len() > 0 && utf8.RuneCountInString(cur.String())+1+utf8.RuneCountInString(word) > width {
			lines = append(lines, cur.String())
			cur.Reset()
		}
		if cur.Len() > 0 {
			cur.WriteByte(' ')
		}
		cur.WriteString(word)
	}
	if cur.Len() > 0 {
		lines = append(lines, cur.String())
	}
	return lines
}

// pad left-aligns text in a column of width runes, cutting it with an ellipsis when longer.
func pad(text string, width int) string {
	n := utf8.RuneCountInString(text)
	if n > width {
		r := []rune(text)
		return string(r[:width-1]) + "…"
	}
	return text + strings.Repeat(" ", width-n)
}

// bar draws count out of total as a bar of width cells.
func bar(count, total int32, width int) string {
	filled := 0
	if total > 0 {
		filled = int((int64(count)*int64(width) + int64(total) - 1) / int64(total))
	}
	if filled > width {
		filled = width
	}
	return strings.Repeat("█", filled) + strings.Repeat("░", width-filled)
}

// ago says how long before now t was, to the largest whole unit.
func ago(d time.Duration) string {
	neg := d < 0
	if neg {
		d = -d
	}
	var s string
	switch {
	case d >= 48*time.Hour:
		s = fmt.Sprintf("%dd", int(d.Hours()/24))
	case d >= time.Hour:
		s = fmt.Sprintf("%dh", int(d.Hours()))
	case d >= time.Minute:
		s = fmt.Sprintf("%dm", int(d.Minutes()))
	default:
		s = fmt.Sprintf("%ds", int(d.Seconds()))
	}
	if neg {
		return "-" + s
	}
	return s
}

// timestamp is how the reports print a time: UTC, to the second.
func timestamp(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05") }
