package clitest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"vmimport/internal/testkit"
)

// TestForeignFormatsRefused: an image of a format qemu-img reads and
// convert does not (Bochs, cloop, DMG, QCOW v1, QED, Parallels, LUKS) is
// refused in one line naming the format, exit 3, and nothing is written;
// before, a Bochs image converted as RAW (its 2,560 bytes of header and
// catalog written as the disk) and exited 0.
func TestForeignFormatsRefused(t *testing.T) {
	testkit.Need(t, "qemu-img")
	names := map[string]string{"bochs": "Bochs", "cloop": "cloop", "dmg": "DMG", "qcow": "QCOW version 1", "qed": "QED", "parallels": "Parallels", "luks": "LUKS"}
	for _, s := range testkit.Samples() {
		want, ok := names[s.QemuFormat]
		if !ok {
			continue
		}
		t.Run(s.Name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			s.Make(t, dir)
			if got := testkit.QemuFormat(t, filepath.Join(dir, s.File)); got != s.QemuFormat {
				t.Fatalf("qemu-img info says %s", got)
			}
			r := convert(t, dir, s.File, "out.raw")
			msg := strings.TrimRight(r.stderr, "\n")
			if r.code != 3 || strings.Contains(msg, "\n") || !strings.Contains(msg, want+" input is not supported") || !strings.Contains(msg, s.File) {
				t.Errorf("exit %d, stderr %q; want exit 3 and one line refusing %s input", r.code, r.stderr, want)
			}
			if _, err := os.Stat(filepath.Join(dir, "out.raw")); err == nil {
				t.Error("out.raw was written")
			}
		})
	}
}
