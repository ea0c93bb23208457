package image

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"vmimport/internal/testkit"
)

func TestResolvePath(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "images")
	other := filepath.Join(root, "other")
	for _, d := range []string{dir, other, filepath.Join(dir, "sub")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{filepath.Join(dir, "base.img"), filepath.Join(dir, "sub", "x.img"), filepath.Join(other, "o.img")} {
		os.WriteFile(f, []byte("x"), 0o644)
	}
	os.Symlink(filepath.Join(other, "o.img"), filepath.Join(dir, "link-out.img"))
	os.Symlink("sub/x.img", filepath.Join(dir, "link-in.img"))
	testkit.Mkfifo(filepath.Join(dir, "fifo"))
	img := filepath.Join(dir, "top.qcow2")
	allowOther := &Options{AllowPaths: []string{other}}
	cases := []struct {
		name string
		opts *Options
		ok   bool
	}{
		{"base.img", nil, true},
		{"sub/x.img", nil, true},
		{"link-in.img", nil, true},
		{filepath.Join(dir, "base.img"), nil, true},
		{"../other/o.img", nil, false},
		{"../other/o.img", allowOther, true},
		{"../../etc/passwd", nil, false},
		{"/etc/shadow", nil, false},
		{"link-out.img", nil, false},
		{"link-out.img", allowOther, true},
		{"fifo", nil, false},
		{"sub", nil, false},
		{"missing.img", nil, false},
		{"", nil, false},
		{"a\x00b", nil, false},
	}
	for _, c := range cases {
		got, err := ResolvePath(img, c.name, c.opts)
		if c.ok && err != nil {
			t.Errorf("ResolvePath(%q) = %v, want ok", c.name, err)
		}
		if !c.ok && err == nil {
			t.Errorf("ResolvePath(%q) = %q, want an error", c.name, got)
		}
	}
	if _, err := ResolvePath(img, "../../etc/passwd", nil); !errors.Is(err, ErrNotAllowed) {
		t.Errorf("escape error %v does not wrap ErrNotAllowed", err)
	}
}
