// Package hive reads Windows registry hive files (regf), read-only and
// bounded, for the import check: keys by path (case-insensitive), their
// subkeys (lf, lh, li and ri lists) and values (REG_SZ, REG_EXPAND_SZ,
// REG_MULTI_SZ, REG_DWORD, REG_QWORD, REG_BINARY; data inline, in a cell, or
// in big-data "db" segments). Cells are read on demand through an
// io.ReaderAt, a few pages at a time, never the whole hive; every offset,
// count and length is checked against the hive's size and the limits below
// before it is used, and every hive gets a budget of cells it may read, so
// a corrupt hive ends in an error, never a loop.
//
// The format is the one documented by Maxim Suhanov ("Windows registry
// file format specification") and libregf; only what the check needs is
// read. Transaction logs (.LOG1/.LOG2) are not replayed: Dirty tells that
// the primary file misses writes that only the logs hold.
package hive

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf16"
)

// Value types.
const (
	RegNone     = 0
	RegSZ       = 1
	RegExpandSZ = 2
	RegBinary   = 3
	RegDWORD    = 4
	RegMultiSZ  = 7
	RegQWORD    = 11
)

// Limits on what a hive may make the reader do.
const (
	baseBlockSize = 4096
	// MaxCells is how many cells one Hive reads in all: a few hundred
	// lookups of a check need some thousands; a hive whose lists loop or
	// fan out without end runs out of them.
	MaxCells = 1 << 20
	// MaxBytes is how many bytes of cells one Hive reads in all: a
	// check reads some hundred KiB; a corrupt hive whose lists point
	// back at large cells would otherwise copy gigabytes within MaxCells.
	MaxBytes = 64 << 20
	// maxCell is the largest cell read (lists of a key with 100,000
	// subkeys are 800 KB).
	maxCell = 1 << 20
	// MaxData is the largest value read (REG_MULTI_SZ lists of devices).
	MaxData = 1 << 20
	// maxSubkeys is the most subkeys listed for one key.
	maxSubkeys = 1 << 17
	// maxValues is the most values listed for one key.
	maxValues = 1 << 16
	// maxDepth is the deepest path looked up.
	maxDepth = 64
	pageSize = 4096
	maxPages = 256 // the page cache: 1 MiB
)

// ErrNotFound is returned for a key or value that is not there.
var ErrNotFound = errors.New("not found")

// ErrCorrupt marks a structure that breaks the format.
var ErrCorrupt = errors.New("corrupt hive")

// Hive is an open hive file.
type Hive struct {
	r    io.ReaderAt
	size int64
	// bins is the size of the hive bins data (from 4096 on).
	bins  int64
	root  uint32
	cells int
	bytes int64
	pages map[int64][]byte
	order []int64
	// Dirty: the two sequence numbers of the base block differ, so the
	// primary file misses writes its logs hold.
	Dirty bool
	// Seq1, Seq2 are the base block's sequence numbers.
	Seq1, Seq2 uint32
	// Minor is the format's minor version (3: 2000/XP era, 5: Vista+).
	Minor uint32
}

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
}

// Open reads the base block of the size-byte hive in r.
func Open(r io.ReaderAt, size int64) (*Hive, error) {
	if size < baseBlockSize+pageSize {
		return nil, corrupt("%d bytes, smaller than a base block and one hive bin", size)
	}
	b := make([]byte, 512)
	if n, err := r.ReadAt(b, 0); n < len(b) {
		return nil, fmt.Errorf("reading the base block: %w", orEOF(err))
	}
	if string(b[:4]) != "regf" {
		return nil, corrupt("no regf signature at offset 0")
	}
	le := binary.LittleEndian
	h := &Hive{r: r, size: size, pages: map[int64][]byte{}}
	h.Seq1, h.Seq2 = le.Uint32(b[4:]), le.Uint32(b[8:])
	h.Dirty = h.Seq1 != h.Seq2
	major, minor := le.Uint32(b[0x14:]), le.Uint32(b[0x18:])
	h.Minor = minor
	if major != 1 || minor < 2 || minor > 6 {
		return nil, corrupt("format version %d.%d at offset 0x14 (1.2 to 1.6 are known)", major, minor)
	}
	if t := le.Uint32(b[0x1c:]); t != 0 {
		return nil, corrupt("file type %d at offset 0x1c is not a primary hive (0)", t)
	}
	h.root = le.Uint32(b[0x24:])
	h.bins = int64(le.Uint32(b[0x28:]))
	// A hive whose bins data size was not yet written (or is wrong)
	// still reads up to the end of the file.
	if h.bins <= 0 || h.bins%pageSize != 0 || h.bins > size-baseBlockSize {
		h.bins = (size - baseBlockSize) &^ (pageSize - 1)
	}
	if int64(h.root) >= h.bins {
		return nil, corrupt("root cell offset 0x%x at offset 0x24 lies past the hive bins (0x%x bytes)", h.root, h.bins)
	}
	return h, nil
}

func orEOF(err error) error {
	if err == nil || err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// page returns the 4 KiB page of the hive bins at off (relative to the
// first bin), through a small cache.
func (h *Hive) page(off int64) ([]byte, error) {
	if p, ok := h.pages[off]; ok {
		return p, nil
	}
	p := make([]byte, pageSize)
	if n, err := h.r.ReadAt(p, baseBlockSize+off); n < len(p) {
		return nil, fmt.Errorf("reading the hive at offset %d: %w", baseBlockSize+off, orEOF(err))
	}
	if len(h.order) >= maxPages {
		delete(h.pages, h.order[0])
		h.order = h.order[1:]
	}
	h.pages[off] = p
	h.order = append(h.order, off)
	return p, nil
}

// read copies len(b) bytes of the hive bins from off.
func (h *Hive) read(b []byte, off int64) error {
	if off < 0 || off+int64(len(b)) > h.bins {
		return corrupt("%d bytes at cell offset 0x%x pass the end of the hive bins (0x%x)", len(b), off, h.bins)
	}
	for len(b) > 0 {
		base := off &^ (pageSize - 1)
		p, err := h.page(base)
		if err != nil {
			return err
		}
		n := copy(b, p[off-base:])
		b, off = b[n:], off+int64(n)
	}
	return nil
}

// cell reads the data of the allocated cell at off (relative to the first
// hive bin), at most limit bytes of it.
func (h *Hive) cell(off uint32, limit int) ([]byte, error) {
	h.cells++
	if h.cells > MaxCells {
		return nil, corrupt("more than %d cells read: the hive's lists loop or are too large", MaxCells)
	}
	if off == 0xffffffff || off%8 != 0 || int64(off) >= h.bins {
		return nil, corrupt("cell offset 0x%x is not a cell of the hive bins (0x%x bytes)", off, h.bins)
	}
	var sz [4]byte
	if err := h.read(sz[:], int64(off)); err != nil {
		return nil, err
	}
	size := int32(binary.LittleEndian.Uint32(sz[:]))
	if size >= 0 {
		return nil, corrupt("cell at 0x%x is free (size %d)", off, size)
	}
	n := int64(-size) - 4
	if n < 0 || n > maxCell {
		return nil, corrupt("cell at 0x%x has the size %d", off, -int64(size))
	}
	n = min(n, int64(limit))
	h.bytes += n
	if h.bytes > MaxBytes {
		return nil, corrupt("more than %d bytes of cells read: the hive's lists loop or are too large", MaxBytes)
	}
	b := make([]byte, n)
	if err := h.read(b, int64(off)+4); err != nil {
		return nil, err
	}
	return b, nil
}

// Key is one registry key.
type Key struct {
	h       *Hive
	off     uint32
	Name    string
	nsub    uint32
	sublist uint32
	nval    uint32
	vallist uint32
}

// key reads the nk cell at off.
func (h *Hive) key(off uint32) (*Key, error) {
	b, err := h.cell(off, 0x4c+1024)
	if err != nil {
		return nil, err
	}
	if len(b) < 0x4c || string(b[:2]) != "nk" {
		return nil, corrupt("cell at 0x%x is not a key node (nk)", off)
	}
	le := binary.LittleEndian
	k := &Key{h: h, off: off, nsub: le.Uint32(b[0x14:]), sublist: le.Uint32(b[0x1c:]), nval: le.Uint32(b[0x24:]), vallist: le.Uint32(b[0x28:])}
	nameLen := int(le.Uint16(b[0x48:]))
	if 0x4c+nameLen > len(b) {
		return nil, corrupt("key node at 0x%x: name of %d bytes passes the cell", off, nameLen)
	}
	k.Name = decodeName(b[0x4c:0x4c+nameLen], le.Uint16(b[2:])&0x20 != 0)
	return k, nil
}

// decodeName reads a key or value name: Latin-1 when compressed, UTF-16LE
// otherwise.
func decodeName(b []byte, compressed bool) string {
	if compressed {
		r := make([]rune, len(b))
		for i, c := range b {
			r[i] = rune(c)
		}
		return string(r)
	}
	return utf16String(b)
}

func utf16String(b []byte) string {
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return string(utf16.Decode(u))
}

// Root is the hive's root key.
func (h *Hive) Root() (*Key, error) { return h.key(h.root) }

// Key finds a key by its path below the root, components separated by
// backslashes, case-insensitively.
func (h *Hive) Key(path string) (*Key, error) {
	k, err := h.Root()
	if err != nil {
		return nil, err
	}
	parts := strings.FieldsFunc(path, func(r rune) bool { return r == '\\' })
	if len(parts) > maxDepth {
		return nil, fmt.Errorf("%s: deeper than %d keys", path, maxDepth)
	}
	for _, p := range parts {
		if k, err = k.Subkey(p); err != nil {
			if errors.Is(err, ErrNotFound) {
				return nil, fmt.Errorf("%s: %w", path, ErrNotFound)
			}
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	return k, nil
}

// Subkeys lists the key's subkeys.
func (k *Key) Subkeys() ([]*Key, error) {
	if k.nsub == 0 {
		return nil, nil
	}
	if k.nsub > maxSubkeys {
		return nil, corrupt("key %q at 0x%x claims %d subkeys", k.Name, k.off, k.nsub)
	}
	var offs []uint32
	if err := k.h.subkeyList(k.sublist, &offs, 0); err != nil {
		return nil, fmt.Errorf("subkeys of %q: %w", k.Name, err)
	}
	keys := make([]*Key, 0, len(offs))
	for _, o := range offs {
		s, err := k.h.key(o)
		if err != nil {
			return nil, fmt.Errorf("subkeys of %q: %w", k.Name, err)
		}
		keys = append(keys, s)
	}
	return keys, nil
}

// subkeyList appends the nk offsets of a subkey list (lf, lh, li, or an
// ri of those) to offs.
func (h *Hive) subkeyList(off uint32, offs *[]uint32, depth int) error {
	b, err := h.cell(off, maxCell)
	if err != nil {
		return err
	}
	if len(b) < 4 {
		return corrupt("subkey list at 0x%x is %d bytes", off, len(b))
	}
	le := binary.LittleEndian
	n := int(le.Uint16(b[2:]))
	sig := string(b[:2])
	stride := 8
	if sig == "li" || sig == "ri" {
		stride = 4
	}
	if sig != "lf" && sig != "lh" && sig != "li" && sig != "ri" {
		return corrupt("cell at 0x%x is not a subkey list (%q)", off, b[:2])
	}
	if 4+n*stride > len(b) {
		return corrupt("subkey list at 0x%x: %d entries pass the cell", off, n)
	}
	for i := range n {
		o := le.Uint32(b[4+i*stride:])
		if sig == "ri" {
			if depth > 0 {
				return corrupt("index root at 0x%x inside another index root", off)
			}
			if err := h.subkeyList(o, offs, depth+1); err != nil {
				return err
			}
			continue
		}
		if len(*offs) >= maxSubkeys {
			return corrupt("more than %d subkeys", maxSubkeys)
		}
		*offs = append(*offs, o)
	}
	return nil
}

// Subkey finds a direct subkey by name, case-insensitively.
func (k *Key) Subkey(name string) (*Key, error) {
	subs, err := k.Subkeys()
	if err != nil {
		return nil, err
	}
	for _, s := range subs {
		if strings.EqualFold(s.Name, name) {
			return s, nil
		}
	}
	return nil, fmt.Errorf("%s\\%s: %w", k.Name, name, ErrNotFound)
}

// Value is one value of a key.
type Value struct {
	h    *Hive
	Name string
	Type uint32
	size uint32
	data uint32
	off  uint32
}

// Values lists the key's values.
func (k *Key) Values() ([]*Value, error) {
	if k.nval == 0 {
		return nil, nil
	}
	if k.nval > maxValues {
		return nil, corrupt("key %q at 0x%x claims %d values", k.Name, k.off, k.nval)
	}
	b, err := k.h.cell(k.vallist, maxCell)
	if err != nil {
		return nil, fmt.Errorf("values of %q: %w", k.Name, err)
	}
	if int(k.nval)*4 > len(b) {
		return nil, corrupt("value list at 0x%x: %d values pass the cell", k.vallist, k.nval)
	}
	vals := make([]*Value, 0, k.nval)
	for i := range int(k.nval) {
		v, err := k.h.value(binary.LittleEndian.Uint32(b[4*i:]))
		if err != nil {
			return nil, fmt.Errorf("values of %q: %w", k.Name, err)
		}
		vals = append(vals, v)
	}
	return vals, nil
}

func (h *Hive) value(off uint32) (*Value, error) {
	b, err := h.cell(off, 0x14+1024)
	if err != nil {
		return nil, err
	}
	if len(b) < 0x14 || string(b[:2]) != "vk" {
		return nil, corrupt("cell at 0x%x is not a value (vk)", off)
	}
	le := binary.LittleEndian
	v := &Value{h: h, off: off, size: le.Uint32(b[4:]), data: le.Uint32(b[8:]), Type: le.Uint32(b[0xc:])}
	nameLen := int(le.Uint16(b[2:]))
	if 0x14+nameLen > len(b) {
		return nil, corrupt("value at 0x%x: name of %d bytes passes the cell", off, nameLen)
	}
	v.Name = decodeName(b[0x14:0x14+nameLen], le.Uint16(b[0x10:])&1 != 0)
	return v, nil
}

// Value finds a value by name, case-insensitively ("" is the default
// value).
func (k *Key) Value(name string) (*Value, error) {
	vals, err := k.Values()
	if err != nil {
		return nil, err
	}
	for _, v := range vals {
		if strings.EqualFold(v.Name, name) {
			return v, nil
		}
	}
	return nil, fmt.Errorf("%s: value %q: %w", k.Name, name, ErrNotFound)
}

// Data reads the value's data, at most MaxData bytes.
func (v *Value) Data() ([]byte, error) {
	n := v.size &^ 0x80000000
	if v.size&0x80000000 != 0 {
		// Up to 4 bytes held in the offset field itself.
		if n > 4 {
			return nil, corrupt("value %q at 0x%x: inline data of %d bytes", v.Name, v.off, n)
		}
		var b [4]byte
		binary.LittleEndian.PutUint32(b[:], v.data)
		return b[:n], nil
	}
	if n == 0 {
		return nil, nil
	}
	if n > MaxData {
		return nil, fmt.Errorf("value %q at 0x%x: %d bytes of data, more than the %d read", v.Name, v.off, n, MaxData)
	}
	b, err := v.h.cell(v.data, maxCell)
	if err != nil {
		return nil, fmt.Errorf("value %q: %w", v.Name, err)
	}
	if len(b) >= 4 && string(b[:2]) == "db" && n > 16344 && v.h.Minor >= 4 {
		return v.h.bigData(b, n)
	}
	if int(n) > len(b) {
		return nil, corrupt("value %q at 0x%x: %d bytes of data in a cell of %d", v.Name, v.off, n, len(b))
	}
	return b[:n], nil
}

// bigData joins the segments of a "db" record.
func (h *Hive) bigData(db []byte, n uint32) ([]byte, error) {
	le := binary.LittleEndian
	count := int(le.Uint16(db[2:]))
	if len(db) < 8 || count == 0 {
		return nil, corrupt("big data record without segments")
	}
	list, err := h.cell(le.Uint32(db[4:]), maxCell)
	if err != nil {
		return nil, err
	}
	if count*4 > len(list) {
		return nil, corrupt("big data segment list: %d segments pass the cell", count)
	}
	out := make([]byte, 0, n)
	for i := range count {
		if uint32(len(out)) >= n {
			break
		}
		seg, err := h.cell(le.Uint32(list[4*i:]), maxCell)
		if err != nil {
			return nil, err
		}
		take := min(len(seg), 16344, int(n)-len(out))
		out = append(out, seg[:take]...)
	}
	if uint32(len(out)) < n {
		return nil, corrupt("big data: %d of %d bytes in its segments", len(out), n)
	}
	return out, nil
}

// Uint reads a REG_DWORD (or REG_QWORD, or a 4- or 8-byte REG_BINARY).
func (v *Value) Uint() (uint64, error) {
	b, err := v.Data()
	if err != nil {
		return 0, err
	}
	switch {
	case (v.Type == RegDWORD || v.Type == RegBinary || v.Type == RegNone) && len(b) == 4:
		return uint64(binary.LittleEndian.Uint32(b)), nil
	case (v.Type == RegQWORD || v.Type == RegBinary || v.Type == RegNone) && len(b) == 8:
		return binary.LittleEndian.Uint64(b), nil
	case v.Type == 5 && len(b) == 4: // REG_DWORD_BIG_ENDIAN
		return uint64(binary.BigEndian.Uint32(b)), nil
	case v.Type == RegSZ || v.Type == RegExpandSZ:
		// Numbers written as strings ("3389").
		var x uint64
		s := strings.TrimSpace(utf16String(trimNul(b)))
		if _, err := fmt.Sscan(s, &x); err == nil {
			return x, nil
		}
	}
	return 0, fmt.Errorf("value %q: type %d, %d bytes: not a number", v.Name, v.Type, len(b))
}

// String reads a REG_SZ or REG_EXPAND_SZ (or the first string of a
// REG_MULTI_SZ); a number reads as its decimal form.
func (v *Value) String() (string, error) {
	switch v.Type {
	case RegSZ, RegExpandSZ, RegMultiSZ, RegNone:
		ss, err := v.Strings()
		if err != nil || len(ss) == 0 {
			return "", err
		}
		return ss[0], nil
	case RegDWORD, RegQWORD:
		x, err := v.Uint()
		return fmt.Sprint(x), err
	}
	return "", fmt.Errorf("value %q: type %d is not a string", v.Name, v.Type)
}

// Strings reads a REG_MULTI_SZ (or a REG_SZ as one string).
func (v *Value) Strings() ([]string, error) {
	b, err := v.Data()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range strings.Split(utf16String(b), "\x00") {
		if s != "" {
			out = append(out, s)
		}
	}
	if v.Type != RegMultiSZ && len(out) > 1 {
		out = out[:1]
	}
	return out, nil
}

func trimNul(b []byte) []byte {
	for len(b) >= 2 && b[len(b)-1] == 0 && b[len(b)-2] == 0 {
		b = b[:len(b)-2]
	}
	return b
}
