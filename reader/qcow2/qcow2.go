// Package qcow2 reads QCOW2 images (versions 2 and 3, with or without
// extended L2 entries). It checks the header and walks every table once
// when the image is opened (header.go, tables.go). Images with standard
// L2 entries are then read through github.com/lima-vm/go-qcow2reader
// (lima.go); extended-L2 images, which that library reads one subcluster
// at a time, through our own map of the L1 table and a bounded cache of L2
// tables (l2.go): a read is served by one pread per contiguous run of the
// file, a zero fill, the backing image or the inflater (decompress.go).
// Backing files are opened through image.OpenParent, under the options'
// rules, and shown to the library as our own image.
package qcow2

import (
	"errors"
	"fmt"
	"io"
	"os"

	limaqcow2 "github.com/lima-vm/go-qcow2reader/image/qcow2"

	"vmimport/reader/image"
)

// Image is an opened QCOW2 image.
type Image struct {
	src     image.Source
	h       *header
	m       *guestMap        // extended-L2 images
	q       *limaqcow2.Qcow2 // the others
	backing image.Image
	cluster int64
}

var _ image.Image = (*Image)(nil)

// Open opens the QCOW2 image in src. Backing files are opened through
// image.OpenParent, and only when opts allow them.
func Open(src image.Source, opts *image.Options) (*Image, error) {
	h, err := parseHeader(src)
	if err != nil {
		return nil, err
	}
	l1, err := checkTables(src, h)
	if err != nil {
		return nil, err
	}
	im := &Image{src: src, h: h, cluster: 1 << h.ClusterBits}
	if h.BackingFile != "" {
		backing, _, err := image.OpenParent(src, opts, image.Parent{
			Format: "qcow2", Kind: "image has backing file", Names: []string{h.BackingFile}, Offset: int64(h.BackingFileOffset),
		})
		if err != nil {
			return nil, err
		}
		im.backing = backing
	}
	if h.Incompatible&incompatExtendedL2 != 0 {
		im.m = newGuestMap(src, h, l1)
		return im, nil
	}
	if im.q, err = openLima(src, h, im.backing); err != nil {
		im.Close()
		return nil, err
	}
	return im, nil
}

// ReadAt reads guest bytes; safe for concurrent use.
func (im *Image) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("qcow2: negative offset")
	}
	n, short := image.Clip(off, len(p), im.Size())
	if n == 0 && len(p) > 0 {
		return 0, io.EOF
	}
	if im.q != nil {
		k, err := im.limaReadAt(p[:n], off)
		if err == nil && short {
			err = io.EOF
		}
		return k, err
	}
	for done := 0; done < n; {
		pos := off + int64(done)
		r, err := im.m.readRun(pos, int64(n-done))
		if err != nil {
			return done, err
		}
		buf := p[done : done+int(r.n)]
		switch r.kind {
		case runData:
			err = im.readFile(buf, pos, r.host)
		case runZero:
			clear(buf)
		case runBacking:
			// ReadParent's errors name this file, the offset and the
			// backing file's own error.
			err = image.ReadParent(im.backing, buf, pos, im.src.Path, "qcow2")
		case runCompressed:
			err = im.readCompressed(buf, pos, r.l2e)
		}
		if err != nil {
			return done, err
		}
		done += len(buf)
	}
	if short {
		return n, io.EOF
	}
	return n, nil
}

// readFile reads data clusters' bytes, which checkTables found inside the
// file: an error is one of I/O (exit 1), naming the guest offset.
func (im *Image) readFile(buf []byte, pos, host int64) error {
	k, err := im.src.R.ReadAt(buf, host)
	if k == len(buf) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF // the file shrank since it was opened
	}
	return fmt.Errorf("%s: qcow2: reading guest offset %d (%d bytes at file offset %d): %w", im.src.Path, pos, len(buf), host, err)
}

// Size is the virtual size.
func (im *Image) Size() int64 { return int64(im.h.Size) }

// Extent reports zero clusters, zero subclusters and, without a backing
// file to show through, unallocated ones as zero runs; runs the backing
// file provides as the backing image reports them.
func (im *Image) Extent(off, n int64) (image.Extent, error) {
	size := im.Size()
	if off < 0 || off >= size {
		return image.Extent{}, io.EOF
	}
	n = min(n, size-off)
	if im.q != nil {
		return im.limaExtent(off, n)
	}
	class, k, err := im.m.extentRun(off, n, im.backing != nil)
	if err != nil {
		return image.Extent{}, err // reading an L2 table: names the file, the table and the offset
	}
	if class == runBacking {
		return image.ParentExtent(im.backing, off, k, im.src.Path, "qcow2")
	}
	return image.Extent{Start: off, Length: k, Zero: class == runZero}, nil
}

// Info describes the image and its backing chain.
func (im *Image) Info() image.Info {
	info := image.Info{
		Format:      "qcow2",
		Subformat:   im.h.subformat(),
		VirtualSize: int64(im.h.Size),
		ClusterSize: im.cluster,
		Path:        im.src.Path,
		BackingFile: im.h.BackingFile,
		Fields:      im.h.fields(),
	}
	if im.h.Version >= 3 {
		info.Compression = "zlib"
		if im.h.CompressionType == 1 {
			info.Compression = "zstd"
		}
	} else {
		info.Compression = "zlib"
	}
	if im.backing != nil {
		b := im.backing.Info()
		info.Backing = &b
	}
	return info
}

// Files is every file of the backing chain (the caller holds this one's).
func (im *Image) Files() []*os.File { return image.Files(im.backing) }

// Close closes the backing chain; the file belongs to the caller.
func (im *Image) Close() error {
	if im.backing != nil {
		return im.backing.Close()
	}
	return nil
}
