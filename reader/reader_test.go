package reader

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"vmimport/reader/image"
)

// FuzzOpen feeds arbitrary bytes to format detection and whichever reader
// claims them, then reads: nothing may panic, hang or allocate from an
// unchecked header field; errors are fine.
func FuzzOpen(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*")
	seeds = append(seeds, "../testdata/sample.qcow2")
	for _, s := range seeds {
		if b, err := os.ReadFile(s); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		src := image.Source{R: bytes.NewReader(data), Size: int64(len(data)), Path: "fuzz.img", Fd: -1}
		opts := &image.Options{Open: func(string, int) (image.Image, error) {
			return nil, errors.New("fuzz: no files")
		}}
		im, err := Detect(src, opts)
		if err != nil {
			return
		}
		defer im.Close()
		size := im.Size()
		if size < 0 {
			t.Fatalf("negative size %d", size)
		}
		_ = im.Info()
		buf := make([]byte, 64<<10)
		// Read the start, the end and a few extents; bounded work.
		for _, off := range []int64{0, size / 2, max(0, size-int64(len(buf)))} {
			if _, err := im.ReadAt(buf, off); err != nil && err != io.EOF {
				continue
			}
		}
		off := int64(0)
		for i := 0; i < 64 && off < size; i++ {
			e, err := im.Extent(off, size-off)
			if err != nil {
				break
			}
			if e.Start != off || e.Length <= 0 {
				t.Fatalf("Extent(%d) = %+v", off, e)
			}
			off += e.Length
		}
	})
}

func TestDetectRefusesContainers(t *testing.T) {
	cases := map[string][]byte{
		"gzip-compressed": append([]byte{0x1f, 0x8b}, make([]byte, 600)...),
		"xz-compressed":   append([]byte("\xfd7zXZ\x00"), make([]byte, 600)...),
		"QCOW version 1":  append([]byte("QFI\xfb\x00\x00\x00\x01"), make([]byte, 600)...),
	}
	for name, b := range cases {
		_, err := Detect(image.Source{R: bytes.NewReader(b), Size: int64(len(b)), Path: "x", Fd: -1}, &image.Options{})
		if !errors.Is(err, image.ErrUnsupported) || !bytes.Contains([]byte(err.Error()), []byte(name)) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	raw := bytes.Repeat([]byte{1}, 1024)
	im, err := Detect(image.Source{R: bytes.NewReader(raw), Size: 1024, Path: "x", Fd: -1}, &image.Options{})
	if err != nil || im.Info().Format != "raw" {
		t.Fatalf("plain bytes: %v, %v", im, err)
	}
}
