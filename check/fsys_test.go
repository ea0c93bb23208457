package check

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"

	"vmimport/check/internal/guestfs"
	"vmimport/internal/testkit"
)

// readerTree is a tree that exercises the readers: a large directory (ext4
// htree, xfs leaf/node), deep paths, long (slow/remote) symlinks, relative
// and absolute symlinks, ".." and a file large enough for double indirect
// blocks (ext3 with 1 KiB blocks) and several extents.
func readerTree() (map[string]string, map[string]string) {
	rng := rand.New(rand.NewPCG(7, 8))
	files := map[string]string{}
	want := map[string]string{}
	for i := range 1000 {
		name := fmt.Sprintf("many/entry-with-a-long-name-%05d", i)
		files[name] = fmt.Sprintf("content %d\n", i)
		if i%250 == 0 {
			want["/"+name] = files[name]
		}
	}
	big := make([]byte, 3<<19+123)
	for i := range big {
		big[i] = byte(rng.Uint32())
	}
	files["data/big.bin"] = string(big)
	want["/data/big.bin"] = string(big)
	long := "/a/" + strings.Repeat("b", 200) + "/c/d/target"
	files[strings.TrimPrefix(long, "/")] = "deep target\n"
	files["links/long"] = "->" + long
	want["/links/long"] = "deep target\n"
	files["links/rel"] = "->../a/" + strings.Repeat("b", 200) + "/c/d/target"
	want["/links/rel"] = "deep target\n"
	files["links/dir"] = "->/a/" + strings.Repeat("b", 200)
	want["/links/dir/c/../c/d/target"] = "deep target\n"
	files["links/loop1"] = "->loop2"
	files["links/loop2"] = "->loop1"
	files["empty/"] = ""
	files["zero.txt"] = ""
	want["/zero.txt"] = ""
	return files, want
}

func TestReaders(t *testing.T) {
	files, want := readerTree()
	for _, c := range []struct {
		name, fstype string
		args         []string
	}{
		{"ext4", "ext4", nil},
		{"ext4-4k", "ext4", []string{"-b", "4096"}},
		{"ext3", "ext3", nil},
		{"ext2", "ext2", nil},
		{"xfs", "xfs", nil},
		{"xfs-v4", "xfs", []string{"-m", "crc=0", "-n", "ftype=0"}},
	} {
		fstype := c.fstype
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			size := int64(48)
			disk := testkit.MakeRootDisk(t, t.TempDir(), testkit.RootDiskOptions{Parts: []testkit.FSPart{{SizeMiB: size, FS: fstype, Files: files, MkfsArgs: c.args}}})
			f, err := os.Open(disk)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			part := io.NewSectionReader(f, 1<<20, size<<20)
			var fsys guestfs.FS
			if fstype == "xfs" {
				fsys, err = guestfs.OpenXFS(part, part.Size())
			} else {
				fsys, err = guestfs.OpenExt4(part, part.Size())
			}
			if err != nil {
				t.Fatal(err)
			}
			tr := guestfs.NewTree(fsys)
			for p, content := range want {
				b, err := tr.ReadFile(p, 16<<20)
				if err != nil {
					t.Errorf("%s: %v", p, err)
					continue
				}
				if !bytes.Equal(b, []byte(content)) {
					t.Errorf("%s: read %d bytes, want %d", p, len(b), len(content))
				}
			}
			ents, err := tr.ReadDir("/many")
			if err != nil || len(ents) != 1000 {
				t.Fatalf("/many: %d entries, %v", len(ents), err)
			}
			names := make([]string, len(ents))
			for i, e := range ents {
				names[i] = e.Name
			}
			slices.Sort(names)
			if names[0] != "entry-with-a-long-name-00000" || names[999] != "entry-with-a-long-name-00999" {
				t.Errorf("names %s .. %s", names[0], names[999])
			}
			if ents, err := tr.ReadDir("/empty"); err != nil || len(ents) != 0 {
				t.Errorf("/empty: %v %v", ents, err)
			}
			if _, err := tr.ReadFile("/links/loop1", 10); err == nil || !strings.Contains(err.Error(), "too many levels") {
				t.Errorf("symlink loop: %v", err)
			}
			if _, err := tr.ReadFile("/nope/x", 10); !errors.Is(err, guestfs.ErrNotFound) {
				t.Errorf("missing file: %v", err)
			}
			if !tr.Exists("/links/loop1") {
				t.Errorf("a dangling symlink exists")
			}
		})
	}
}
