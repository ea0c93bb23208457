package safetext

import (
	"testing"
	"unicode/utf8"
)

func TestEscape(t *testing.T) {
	for in, want := range map[string]string{
		"plain text, tabs\tand ünïcode":  "plain text, tabs\tand ünïcode",
		"\x1b[2J\x1b]0;owned\x07":        `\x1b[2J\x1b]0;owned\x07`,
		"abc\u202egnp.exe":               `abc\u202egnp.exe`,
		"nul\x00 del\x7f c1\u0085":       `nul\x00 del\x7f c1\x85`,
		"bad \xff utf8":                  `bad \xff utf8`,
		"zero\u200bwidth\u2066iso\u2069": `zero\u200bwidth\u2066iso\u2069`,
		"line\u2028sep":                  `line\u2028sep`,
	} {
		if got := Escape(in); got != want {
			t.Errorf("Escape(%q) = %q, want %q", in, got, want)
		}
	}
	if got := Line("first\r\n\n  second \x1b[31m\n"); got != `first; second \x1b[31m` {
		t.Errorf("Line: %q", got)
	}
}

// FuzzEscape: whatever comes in, what goes out is valid UTF-8 without a
// single rune Escape means to keep from a terminal.
func FuzzEscape(f *testing.F) {
	f.Add("\x1b[2J\u202e\x00\xff")
	f.Fuzz(func(t *testing.T, s string) {
		out := Escape(s)
		if !utf8.ValidString(out) {
			t.Fatalf("Escape(%q) = %q: not UTF-8", s, out)
		}
		for _, r := range out {
			if unsafe(r) {
				t.Fatalf("Escape(%q) = %q holds %U", s, out, r)
			}
		}
	})
}
