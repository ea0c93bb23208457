package main

import (
	"strings"

	"vmimport/internal/safetext"
)

// safeLines escapes every line of s for a terminal (safetext.Escape),
// keeping its line breaks: text from outside (an API's error, a server's
// header, a name inside an image) reaches the user without a control
// character or escape sequence of its own.
func safeLines(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = safetext.Escape(l)
	}
	return strings.Join(lines, "\n")
}
