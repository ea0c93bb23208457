package reader

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"vmimport/internal/testkit"
	"vmimport/reader/image"
)

// ours is the name Info().Format gives a format qemu-img names so, for the
// formats convert reads.
var ours = map[string]string{"qcow2": "qcow2", "vmdk": "vmdk", "vpc": "vhd", "vhdx": "vhdx", "vdi": "vdi"}

// refused is the name the refusal of a format we do not read gives it.
var refused = map[string]string{
	"qcow": "QCOW version 1", "qed": "QED", "parallels": "Parallels", "luks": "LUKS", "bochs": "Bochs", "cloop": "cloop", "dmg": "DMG",
}

// TestDetectTable: a sample of every format qemu-img 7.2 probes (made with
// qemu-img where it writes the format, crafted from the published header
// otherwise), checked first against qemu-img info: a format convert reads
// opens as that format; any other is refused in one line naming it; none
// is ever read as RAW.
func TestDetectTable(t *testing.T) {
	testkit.Need(t, "qemu-img")
	seen := map[string]bool{}
	for _, s := range testkit.Samples() {
		t.Run(s.Name, func(t *testing.T) {
			t.Parallel()
			p := s.Make(t, t.TempDir())
			if got := testkit.QemuFormat(t, p); got != s.QemuFormat {
				t.Fatalf("qemu-img info says %q; the sample is meant to be %q", got, s.QemuFormat)
			}
			im, err := Open(p, Options{})
			if want, ok := ours[s.QemuFormat]; ok {
				if err != nil {
					t.Fatalf("not opened: %v", err)
				}
				defer im.Close()
				if f := im.Info().Format; f != want {
					t.Fatalf("opened as %s, want %s", f, want)
				}
				return
			}
			if err == nil {
				f := im.Info().Format
				im.Close()
				t.Fatalf("opened as %s; want it refused as %s", f, refused[s.QemuFormat])
			}
			msg := err.Error()
			if !errors.Is(err, image.ErrUnsupported) || !strings.Contains(msg, refused[s.QemuFormat]) || !strings.Contains(msg, p) || strings.Contains(msg, "\n") {
				t.Fatalf("err = %v; want one line refusing %s by name", err, refused[s.QemuFormat])
			}
		})
		seen[s.QemuFormat] = true
	}
	// Every format qemu-img probes has a sample (raw, its fallback, aside).
	for _, f := range []string{"bochs", "cloop", "dmg", "luks", "parallels", "qcow", "qcow2", "qed", "vdi", "vhdx", "vmdk", "vpc"} {
		if !seen[f] {
			t.Errorf("no sample of %s", f)
		}
	}
}

// TestDetectVMDKVersionLine: qemu-img takes a text file whose first line
// (after comments and blank lines) is version=1..3 for a VMDK descriptor,
// however large; so does convert, never RAW.
func TestDetectVMDKVersionLine(t *testing.T) {
	for _, text := range []string{"version=1\n", "# a comment\n   \r\nversion=3\r\nanything", "version=2\n" + strings.Repeat("x", 2<<20)} {
		b := []byte(text)
		_, err := Detect(image.Source{R: bytes.NewReader(b), Size: int64(len(b)), Path: "d.vmdk", Fd: -1}, &image.Options{})
		if err == nil || !strings.Contains(strings.ToLower(err.Error()), "vmdk") {
			t.Errorf("%.30q: err = %v; want a VMDK error", text, err)
		}
	}
	for _, text := range []string{"\nversion=1\n", "version=4\n", "  x\nversion=1\n"} {
		b := append([]byte(text), make([]byte, 2048)...)
		if isVMDKVersionLine(b, nil, int64(len(b))) {
			t.Errorf("%q: taken for a VMDK descriptor", text)
		}
	}
}
