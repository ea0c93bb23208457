package testkit

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf16"
)

// MakeNTFS builds an NTFS file system of sizeMiB in file img with mkntfs,
// then its tree: every folder a file path names (made as below) and the
// files, copied in with ntfscp. Paths are absolute with "/"; a path ending
// in "/" is an empty folder. It needs no root and no mount.
//
// ntfscp copies files but cannot make folders, so a folder is made by
// copying an empty file in its place and turning that file's MFT record
// into a directory: the directory flag, the $FILE_NAME flag that says an
// $I30 index is present (in the record and in the parent's index entry),
// and an empty resident $INDEX_ROOT instead of the $DATA attribute.
// ntfs-3g then writes into it (ntfscp) and reads it back (ntfsls,
// ntfscat), growing its index into $INDEX_ALLOCATION when it fills.
func MakeNTFS(t testing.TB, img string, sizeMiB int64, label string, files map[string][]byte) {
	t.Helper()
	Need(t, "mkntfs", "ntfscp")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(sizeMiB << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	args := []string{"-q", "-F", "-Q", "-s", "512", "-p", "2048", "-H", "255", "-S", "63"}
	if label != "" {
		args = append(args, "-L", label)
	}
	Run(t, "mkntfs", append(args, img)...)
	dirs := map[string]bool{}
	for p := range files {
		d := path.Dir(strings.TrimSuffix(p, "/"))
		if strings.HasSuffix(p, "/") {
			d = strings.TrimSuffix(p, "/")
		}
		for ; d != "/" && d != "."; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	order := make([]string, 0, len(dirs))
	for d := range dirs {
		order = append(order, d)
	}
	slices.SortFunc(order, func(a, b string) int {
		if c := strings.Count(a, "/") - strings.Count(b, "/"); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	tmp := t.TempDir()
	empty := filepath.Join(tmp, "empty")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, d := range order {
		Run(t, "ntfscp", "-q", img, empty, d)
		ntfsMkdir(t, img, path.Base(d))
	}
	names := make([]string, 0, len(files))
	for p := range files {
		if !strings.HasSuffix(p, "/") {
			names = append(names, p)
		}
	}
	// hiberfil.sys last: ntfs-3g refuses to write to a volume whose
	// hiberfil.sys says it is hibernated.
	slices.SortFunc(names, func(a, b string) int {
		ha, hb := strings.EqualFold(a, "/hiberfil.sys"), strings.EqualFold(b, "/hiberfil.sys")
		switch {
		case ha && !hb:
			return 1
		case hb && !ha:
			return -1
		}
		return strings.Compare(a, b)
	})
	for i, p := range names {
		src := filepath.Join(tmp, fmt.Sprintf("f%d", i))
		if err := os.WriteFile(src, files[p], 0o644); err != nil {
			t.Fatal(err)
		}
		Run(t, "ntfscp", "-q", "-f", img, src, p)
	}
}

// ntfsVolume is what ntfsMkdir needs of a volume: its bytes and geometry.
type ntfsVolume struct {
	b       []byte
	recSize int
	ixByte  byte
}

func readNTFS(t testing.TB, img string) *ntfsVolume {
	t.Helper()
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	v := &ntfsVolume{b: b, ixByte: b[0x44]}
	bps, spc := int(binary.LittleEndian.Uint16(b[0x0b:])), int(b[0x0d])
	if c := int8(b[0x40]); c > 0 {
		v.recSize = int(c) * bps * spc
	} else {
		v.recSize = 1 << uint(-c)
	}
	return v
}

// unfix undoes a record's update sequence; refix writes it back.
func unfix(r []byte) {
	le := binary.LittleEndian
	off, n := int(le.Uint16(r[4:])), int(le.Uint16(r[6:]))
	for i := 1; i < n; i++ {
		copy(r[i*512-2:i*512], r[off+2*i:off+2*i+2])
	}
}

func refix(r []byte) {
	le := binary.LittleEndian
	off, n := int(le.Uint16(r[4:])), int(le.Uint16(r[6:]))
	for i := 1; i < n; i++ {
		copy(r[off+2*i:off+2*i+2], r[i*512-2:i*512])
		copy(r[i*512-2:i*512], r[off:off+2])
	}
}

func utf16Bytes(s string) []byte {
	u := utf16.Encode([]rune(s))
	b := make([]byte, 2*len(u))
	for i, c := range u {
		binary.LittleEndian.PutUint16(b[2*i:], c)
	}
	return b
}

// ntfsMkdir turns the empty file named name (unique on the volume) into
// an empty directory.
func ntfsMkdir(t testing.TB, img, name string) {
	t.Helper()
	v := readNTFS(t, img)
	le := binary.LittleEndian
	want := utf16Bytes(name)
	found := -1
	var rec []byte
	for off := 0; off+v.recSize <= len(v.b); off += 512 {
		r := v.b[off : off+v.recSize]
		if string(r[:4]) != "FILE" || le.Uint16(r[0x16:])&1 == 0 || le.Uint64(r[0x20:]) != 0 {
			continue
		}
		c := bytes.Clone(r)
		unfix(c)
		for a := int(le.Uint16(c[0x14:])); a+8 < len(c) && le.Uint32(c[a:]) != 0xffffffff; a += int(le.Uint32(c[a+4:])) {
			if le.Uint32(c[a+4:]) == 0 {
				break
			}
			if le.Uint32(c[a:]) == 0x30 && c[a+8] == 0 {
				fn := c[a+int(le.Uint16(c[a+0x14:])):]
				if int(fn[0x40])*2 == len(want) && bytes.Equal(fn[0x42:0x42+len(want)], want) {
					if found >= 0 {
						t.Fatalf("ntfsMkdir: %q is not unique on the volume", name)
					}
					found, rec = off, c
				}
			}
		}
	}
	if found < 0 {
		t.Fatalf("ntfsMkdir: no file %q on the volume", name)
	}
	num := le.Uint32(rec[0x2c:])
	// Rebuild the attributes: $DATA out, $INDEX_ROOT in (before any
	// attribute of a higher type).
	ir := make([]byte, 0x50)
	le.PutUint32(ir[0:], 0x90)
	le.PutUint32(ir[4:], 0x50)
	ir[9] = 4 // name length
	le.PutUint16(ir[0x0a:], 0x18)
	le.PutUint16(ir[0x0e:], le.Uint16(rec[0x28:]))
	le.PutUint16(rec[0x28:], le.Uint16(rec[0x28:])+1)
	le.PutUint32(ir[0x10:], 0x30)
	le.PutUint16(ir[0x14:], 0x20)
	copy(ir[0x18:], utf16Bytes("$I30"))
	val := ir[0x20:]
	le.PutUint32(val[0:], 0x30) // indexes $FILE_NAME
	le.PutUint32(val[4:], 1)    // COLLATION_FILE_NAME
	le.PutUint32(val[8:], 4096) // index block size
	val[12] = v.ixByte
	le.PutUint32(val[0x10:], 0x10) // entries offset
	le.PutUint32(val[0x14:], 0x20) // index length
	le.PutUint32(val[0x18:], 0x20) // allocated
	le.PutUint16(val[0x20+8:], 0x10)
	le.PutUint16(val[0x20+12:], 2) // the last entry
	var attrs []byte
	placed := false
	for a := int(le.Uint16(rec[0x14:])); le.Uint32(rec[a:]) != 0xffffffff; a += int(le.Uint32(rec[a+4:])) {
		typ, alen := le.Uint32(rec[a:]), int(le.Uint32(rec[a+4:]))
		at := bytes.Clone(rec[a : a+alen])
		if typ == 0x80 && at[9] == 0 {
			continue
		}
		if typ > 0x90 && !placed {
			attrs, placed = append(attrs, ir...), true
		}
		if typ == 0x30 && at[8] == 0 {
			fn := at[int(le.Uint16(at[0x14:])):]
			le.PutUint32(fn[0x38:], le.Uint32(fn[0x38:])|0x10000000)
			le.PutUint64(fn[0x28:], 0)
			le.PutUint64(fn[0x30:], 0)
		}
		attrs = append(attrs, at...)
	}
	if !placed {
		attrs = append(attrs, ir...)
	}
	first := int(le.Uint16(rec[0x14:]))
	end := first + len(attrs)
	if end+8 > v.recSize {
		t.Fatalf("ntfsMkdir: record of %q too full", name)
	}
	clear(rec[first : v.recSize-2]) // the last two bytes are the fixup slot
	copy(rec[first:], attrs)
	le.PutUint32(rec[end:], 0xffffffff)
	le.PutUint32(rec[0x18:], uint32(end+8))
	le.PutUint16(rec[0x16:], le.Uint16(rec[0x16:])|2)
	refix(rec)
	copy(v.b[found:], rec)
	// The parent's index entry: the same $FILE_NAME flag.
	for off := 0; off+512 <= len(v.b); off += 512 {
		switch string(v.b[off : off+4]) {
		case "INDX":
			n := int(le.Uint16(v.b[off+6:])) - 1
			if n <= 0 || off+n*512 > len(v.b) {
				continue
			}
			blk := bytes.Clone(v.b[off : off+n*512])
			unfix(blk)
			if markEntries(blk, 0x18, num) {
				refix(blk)
				copy(v.b[off:], blk)
			}
		case "FILE":
			if off+v.recSize > len(v.b) || off == found {
				continue
			}
			r := bytes.Clone(v.b[off : off+v.recSize])
			unfix(r)
			changed := false
			for a := int(le.Uint16(r[0x14:])); a+8 < len(r) && le.Uint32(r[a:]) != 0xffffffff && le.Uint32(r[a+4:]) != 0; a += int(le.Uint32(r[a+4:])) {
				if le.Uint32(r[a:]) == 0x90 {
					changed = markEntries(r[a+int(le.Uint16(r[a+0x14:])):], 0x10, num) || changed
				}
			}
			if changed {
				refix(r)
				copy(v.b[off:], r)
			}
		}
	}
	if err := os.WriteFile(img, v.b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// markEntries sets the directory flag in the index entries of node (its
// header at hdr) that name MFT record num.
func markEntries(b []byte, hdr int, num uint32) bool {
	le := binary.LittleEndian
	if hdr+16 > len(b) {
		return false
	}
	start, end := hdr+int(le.Uint32(b[hdr:])), hdr+int(le.Uint32(b[hdr+4:]))
	changed := false
	for off := start; off+16 <= end && end <= len(b); {
		elen, flags := int(le.Uint16(b[off+8:])), le.Uint16(b[off+12:])
		if elen < 16 || flags&2 != 0 {
			break
		}
		if uint32(le.Uint64(b[off:])&(1<<48-1)) == num {
			k := b[off+16:]
			le.PutUint32(k[0x38:], le.Uint32(k[0x38:])|0x10000000)
			changed = true
		}
		off += elen
	}
	return changed
}

// SetNTFSDirty sets the dirty flag of $Volume (record 3) in the NTFS file
// system at offset off of file img.
func SetNTFSDirty(t testing.TB, img string, off int64) { setNTFSDirty(t, img, off, true) }

func setNTFSDirty(t testing.TB, img string, off int64, dirty bool) {
	t.Helper()
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	boot := make([]byte, 512)
	if _, err := f.ReadAt(boot, off); err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	cluster := int64(le.Uint16(boot[0x0b:])) * int64(boot[0x0d])
	recSize := int64(1) << uint(-int8(boot[0x40]))
	if c := int8(boot[0x40]); c > 0 {
		recSize = int64(c) * cluster
	}
	at := off + int64(le.Uint64(boot[0x30:]))*cluster + 3*recSize
	r := make([]byte, recSize)
	if _, err := f.ReadAt(r, at); err != nil {
		t.Fatal(err)
	}
	unfix(r)
	ok := false
	for a := int(le.Uint16(r[0x14:])); a+8 < len(r) && le.Uint32(r[a:]) != 0xffffffff && le.Uint32(r[a+4:]) != 0; a += int(le.Uint32(r[a+4:])) {
		if le.Uint32(r[a:]) == 0x70 {
			v := r[a+int(le.Uint16(r[a+0x14:])):]
			if dirty {
				le.PutUint16(v[10:], le.Uint16(v[10:])|1)
			} else {
				le.PutUint16(v[10:], le.Uint16(v[10:])&^1)
			}
			ok = true
		}
	}
	if !ok {
		t.Fatal("SetNTFSDirty: no $VOLUME_INFORMATION in record 3")
	}
	refix(r)
	if _, err := f.WriteAt(r, at); err != nil {
		t.Fatal(err)
	}
}

// PE is the start of a Windows program (an MZ header pointing at a PE
// header) for the machine type (0x8664 x86_64, 0x14c i386, 0xaa64 arm64).
func PE(machine uint16) []byte {
	b := make([]byte, 512)
	copy(b, "MZ")
	binary.LittleEndian.PutUint32(b[0x3c:], 0x80)
	copy(b[0x80:], "PE\x00\x00")
	binary.LittleEndian.PutUint16(b[0x84:], machine)
	return b
}
