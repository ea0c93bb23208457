// Package raw reads a RAW disk image: the file or block device is the disk.
package raw

import (
	"errors"
	"io"

	"vmimport/reader/image"
)

// Image is a RAW image. Its allocation map comes from SEEK_DATA / SEEK_HOLE
// where the file system reports holes; elsewhere every byte counts as data.
type Image struct {
	src image.Source
	// subformat is "file", "block device" or "section".
	subformat string
}

var _ image.Image = (*Image)(nil)

// Open returns src as a RAW image. subformat describes where it lives.
func Open(src image.Source, subformat string) (*Image, error) {
	if src.Size < 0 {
		return nil, image.Corruptf(src.Path, "raw", -1, "negative size %d", src.Size)
	}
	return &Image{src: src, subformat: subformat}, nil
}

// ReadAt reads the disk's bytes.
func (im *Image) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("raw: negative offset")
	}
	n, short := image.Clip(off, len(p), im.src.Size)
	if n == 0 && len(p) > 0 {
		return 0, io.EOF
	}
	m, err := im.src.R.ReadAt(p[:n], off)
	if m == n {
		err = nil
	} else if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF // the file shrank under us
	}
	if err == nil && short {
		err = io.EOF
	}
	return m, err
}

// Size returns the size of the file or device.
func (im *Image) Size() int64 { return im.src.Size }

// Extent reports holes as zero runs where the file system knows them.
func (im *Image) Extent(off, n int64) (image.Extent, error) {
	if off < 0 || off >= im.src.Size {
		return image.Extent{}, io.EOF
	}
	if n > im.src.Size-off {
		n = im.src.Size - off
	}
	k, hole := image.FileExtent(im.src.Fd, off, n)
	return image.Extent{Start: off, Length: k, Zero: hole}, nil
}

// Info describes the image.
func (im *Image) Info() image.Info {
	return image.Info{Format: "raw", Subformat: im.subformat, VirtualSize: im.src.Size, Path: im.src.Path}
}

// Close releases nothing: the file belongs to the caller.
func (im *Image) Close() error { return nil }
