package image

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// memImage is an image of bytes, with an identity.
type memImage struct {
	b        []byte
	format   string
	id       string
	closed   bool
	zeroFrom int64 // Extent reports [zeroFrom, size) as zero
}

func (m *memImage) ReadAt(p []byte, off int64) (int, error) {
	return bytes.NewReader(m.b).ReadAt(p, off)
}
func (m *memImage) Size() int64                { return int64(len(m.b)) }
func (m *memImage) Info() Info                 { return Info{Format: m.format} }
func (m *memImage) Close() error               { m.closed = true; return nil }
func (m *memImage) Identity() (string, string) { return m.format, m.id }
func (m *memImage) Extent(off, n int64) (Extent, error) {
	if off >= m.zeroFrom {
		return Extent{Start: off, Length: n, Zero: true}, nil
	}
	return Extent{Start: off, Length: min(n, m.zeroFrom-off)}, nil
}

// wrapped hides an image's methods but Unwrap, as package reader's
// fileImage does.
type wrapped struct{ Image }

func (w wrapped) Unwrap() Image { return w.Image }

func TestOpenParent(t *testing.T) {
	dir := t.TempDir()
	child := filepath.Join(dir, "child.vhd")
	os.WriteFile(filepath.Join(dir, "parent.vhd"), []byte("p"), 0o644)
	src := Source{Path: child}
	var opened []*memImage
	open := func(id string) Opener {
		return func(p string, _ int) (Image, error) {
			m := &memImage{format: "vhd", id: id, b: []byte("parent")}
			opened = append(opened, m)
			return wrapped{m}, nil
		}
	}
	ref := Parent{Format: "vhd", Kind: "differencing disk with parent", Names: []string{"missing.vhd", "parent.vhd"}, Offset: 40, IDs: []string{"abc"}, IDName: "UUID"}
	cases := []struct {
		name string
		opts *Options
		ref  Parent
		want error // nil: opened
		msg  string
	}{
		{"nil options", nil, ref, ErrNotAllowed, "pass --allow-backing"},
		{"not allowed", &Options{Open: open("abc")}, ref, ErrNotAllowed, `differencing disk with parent "missing.vhd"`},
		{"no opener", &Options{AllowBacking: true}, ref, ErrNotAllowed, "--allow-backing"},
		{"ok, second name", &Options{AllowBacking: true, Open: open("abc")}, ref, nil, ""},
		{"wrong identity", &Options{AllowBacking: true, Open: open("xyz")}, ref, ErrCorrupt, `parent "parent.vhd" is vhd with UUID "xyz", the child expects a vhd with UUID abc`},
		{"no names", &Options{AllowBacking: true, Open: open("abc")}, Parent{Format: "vhd", Kind: "parent", Offset: 64}, ErrCorrupt, "names no usable file"},
		{"escape", &Options{AllowBacking: true, Open: open("abc")}, Parent{Format: "qcow2", Kind: "backing file", Names: []string{"../x"}}, ErrNotAllowed, "outside the image's folder"},
	}
	for _, c := range cases {
		opened = nil
		p, name, err := OpenParent(src, c.opts, c.ref)
		if c.want == nil {
			if err != nil || p == nil || name != "parent.vhd" {
				t.Errorf("%s: OpenParent = %v, %q, %v", c.name, p, name, err)
			}
			continue
		}
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: error %v, want %v with %q", c.name, err, c.want, c.msg)
		}
		for _, m := range opened {
			if !m.closed {
				t.Errorf("%s: a refused parent was left open", c.name)
			}
		}
	}
}

func TestReadParentAndExtent(t *testing.T) {
	p := &memImage{b: []byte("abcdef"), zeroFrom: 4}
	buf := bytes.Repeat([]byte{'x'}, 8)
	if err := ReadParent(p, buf, 2, "c", "vhd"); err != nil || string(buf) != "cdef\x00\x00\x00\x00" {
		t.Errorf("ReadParent across the parent's end: %q, %v", buf, err)
	}
	if err := ReadParent(nil, buf, 0, "c", "vhd"); err != nil || !bytes.Equal(buf, make([]byte, 8)) {
		t.Errorf("ReadParent of no parent: %q, %v", buf, err)
	}
	for _, c := range []struct {
		off, n int64
		want   Extent
	}{
		{0, 10, Extent{Start: 0, Length: 4}},
		{4, 10, Extent{Start: 4, Length: 2, Zero: true}},
		{6, 10, Extent{Start: 6, Length: 10, Zero: true}},
	} {
		if e, err := ParentExtent(p, c.off, c.n, "c", "vhd"); err != nil || e != c.want {
			t.Errorf("ParentExtent(%d, %d) = %+v, %v; want %+v", c.off, c.n, e, err, c.want)
		}
	}
}
