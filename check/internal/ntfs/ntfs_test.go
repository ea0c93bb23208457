package ntfs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"vmimport/internal/testkit"
)

// testTree is what the tests put on the volume: a deep path, a folder of
// many files (its index grows into $INDEX_ALLOCATION blocks), a file of
// several clusters, and a resident one.
func testTree() map[string][]byte {
	big := make([]byte, 300<<10)
	for i := range big {
		big[i] = byte(i * 7)
	}
	files := map[string][]byte{
		"/Windows/System32/config/SYSTEM": big,
		"/Windows/System32/cmd.exe":       testkit.PE(0x8664),
		"/hiberfil.sys":                   []byte("HIBR"),
		"/Empty/":                         nil,
	}
	for i := range 200 {
		files[fmt.Sprintf("/Windows/System32/DriverStore/FileRepository/pkg%03d.inf_amd64_%x", i, i*977)] = []byte("x")
	}
	return files
}

func makeVolume(t testing.TB) (string, map[string][]byte) {
	t.Helper()
	files := testTree()
	img := filepath.Join(t.TempDir(), "ntfs.img")
	testkit.MakeNTFS(t, img, 32, "SYS", files)
	return img, files
}

func open(t testing.TB, img string) *FS {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	st, _ := f.Stat()
	fs, err := Open(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

func TestRead(t *testing.T) {
	img, files := makeVolume(t)
	fs := open(t, img)
	for p, want := range files {
		if strings.HasSuffix(p, "/") {
			continue
		}
		// Case-insensitively, as Windows looks names up.
		f, err := fs.Open(strings.ToLower(p))
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		got := make([]byte, f.Size())
		if n, err := f.ReadAt(got, 0); n != len(got) || (err != nil && n < len(got)) {
			t.Fatalf("%s: read %d of %d: %v", p, n, len(got), err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: contents differ", p)
		}
	}
	if d, err := fs.Open("/EMPTY"); err != nil || !d.IsDir() {
		t.Errorf("/Empty: %v", err)
	}
	if _, err := fs.Open("/Windows/System32/nope.exe"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing file: %v", err)
	}
	names, err := fs.ReadDir("/windows/system32/driverstore/filerepository")
	if err != nil || len(names) != 200 {
		t.Fatalf("%d names, %v", len(names), err)
	}
	// ntfs-3g lists the same names.
	out := testkit.Run(t, "ntfsls", "-f", "-p", "/Windows/System32/DriverStore/FileRepository", img)
	theirs := slices.DeleteFunc(strings.Fields(out), func(s string) bool { return s == "." || s == ".." })
	slices.Sort(theirs)
	ours := slices.Clone(names)
	slices.Sort(ours)
	if !slices.Equal(ours, theirs) {
		t.Errorf("names differ from ntfsls:\n%v\n%v", ours[:3], theirs[:min(3, len(theirs))])
	}
	vol, err := fs.Volume()
	if err != nil || vol.Dirty || vol.Major != 3 {
		t.Errorf("volume %+v %v", vol, err)
	}
	used, total, err := fs.Usage()
	if err != nil || total <= 32<<20-8192 || total > 32<<20 || used <= 300<<10 || used >= total {
		t.Errorf("usage %d of %d, %v", used, total, err)
	}
	testkit.SetNTFSDirty(t, img, 0)
	if vol, err := open(t, img).Volume(); err != nil || !vol.Dirty {
		t.Errorf("dirty volume %+v %v", vol, err)
	}
}
