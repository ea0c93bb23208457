// Package safetext makes text that came from outside (an API's or a
// server's error body, a header, a name inside an image) safe to put
// before a user on a terminal: no escape sequence, no control character,
// no character that reorders or hides the text around it.
package safetext

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Escape returns s with every control character (C0 but tab, DEL, C1),
// every bidirectional or invisible formatting character (U+202E and its
// kin, zero-width marks, line and paragraph separators) and every byte
// that is not UTF-8 written as a Go escape (\x1b, \u202e, \xff).
func Escape(s string) string {
	if clean(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case unsafe(r):
			if r < 0x100 {
				fmt.Fprintf(&b, `\x%02x`, r)
			} else {
				fmt.Fprintf(&b, `\u%04x`, r)
			}
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// Line is s as one line: its lines joined with "; " (each trimmed, empty
// ones dropped), then escaped.
func Line(s string) string {
	s = strings.TrimSpace(s)
	if strings.ContainsAny(s, "\r\n") {
		f := strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' })
		out := f[:0]
		for _, l := range f {
			if l = strings.TrimSpace(l); l != "" {
				out = append(out, l)
			}
		}
		s = strings.Join(out, "; ")
	}
	return Escape(s)
}

func clean(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 && c != '\t' || c >= 0x7f {
			return false
		}
	}
	return true
}

// unsafe tells the runes Escape writes as escapes.
func unsafe(r rune) bool {
	switch {
	case r < 0x20:
		return r != '\t'
	case r >= 0x7f && r <= 0x9f:
		return true
	case r == 0x061c, r == 0x180e, r == 0xfeff, r == 0xfff9, r == 0xfffa, r == 0xfffb:
		return true
	case r >= 0x200b && r <= 0x200f, r >= 0x2028 && r <= 0x202e, r >= 0x2060 && r <= 0x206f:
		return true
	}
	return false
}
