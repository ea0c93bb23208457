// Package qcow2 reads QCOW2 images (versions 2 and 3) through
// github.com/lima-vm/go-qcow2reader, after checking the header itself: the
// library trusts header fields with allocations and opens backing files on
// its own, so we validate every field against the file size first and let it
// open a backing file only once we have resolved and allowed that path.
package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	limaimage "github.com/lima-vm/go-qcow2reader/image"
	limaqcow2 "github.com/lima-vm/go-qcow2reader/image/qcow2"

	"vmimport/reader/image"
)

// Image is an opened QCOW2 image.
type Image struct {
	src     image.Source
	h       *header
	q       *limaqcow2.Qcow2
	backing image.Image
	cluster int64
}

var _ image.Image = (*Image)(nil)

// plainReaderAt hides the file's name from go-qcow2reader, so it cannot
// resolve and open a backing file by itself.
type plainReaderAt struct{ io.ReaderAt }

// stubBacking is the backing file name go-qcow2reader is shown instead of
// the image's own: the library insists on opening the backing file itself
// with os.Open, which cannot reach a remote file and, for a name we have
// not resolved, could open anything (a FIFO would hang it). It opens the
// root folder instead (always there, one byte long, so it fits in the
// place of any name) and hands it to our opener, which closes it and
// returns the backing image we opened under our own rules.
const stubBacking = "/"

// stubbedReaderAt shows go-qcow2reader the image with stubBacking as its
// backing file name: the name's length in the header (bytes 16..19) and
// the name's bytes at its offset are replaced in every read that covers
// them. The image's own bytes are never changed.
type stubbedReaderAt struct {
	io.ReaderAt
	nameOff int64
}

func (s stubbedReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := s.ReaderAt.ReadAt(p, off)
	var size [4]byte
	binary.BigEndian.PutUint32(size[:], uint32(len(stubBacking)))
	patch(p[:n], off, 16, size[:])
	patch(p[:n], off, s.nameOff, []byte(stubBacking))
	return n, err
}

// patch copies the bytes of with that lie inside p, which holds the file's
// bytes from off, where with sits at at.
func patch(p []byte, off, at int64, with []byte) {
	for i, b := range with {
		if j := at + int64(i) - off; j >= 0 && j < int64(len(p)) {
			p[j] = b
		}
	}
}

// Open opens the QCOW2 image in src. Backing files are opened through
// image.OpenParent, and only when opts allow them.
func Open(src image.Source, opts *image.Options) (*Image, error) {
	register()
	h, err := parseHeader(src)
	if err != nil {
		return nil, err
	}
	if err := checkTables(src, h); err != nil {
		return nil, err
	}
	im := &Image{src: src, h: h, cluster: 1 << h.ClusterBits}
	var ra io.ReaderAt = plainReaderAt{src.R}
	var open limaimage.OpenWithType
	if h.BackingFile != "" {
		backing, _, err := image.OpenParent(src, opts, image.Parent{
			Format: "qcow2", Kind: "image has backing file", Names: []string{h.BackingFile}, Offset: int64(h.BackingFileOffset),
		})
		if err != nil {
			return nil, err
		}
		im.backing = backing
		ra = plainReaderAt{stubbedReaderAt{src.R, int64(h.BackingFileOffset)}}
		open = func(f io.ReaderAt, _ limaimage.Type) (limaimage.Image, error) {
			closeIfCloser(f) // the stub: we read through our own image
			return limaAdapter{backing}, nil
		}
	}
	q, err := limaqcow2.Open(ra, open)
	if err == nil {
		err = q.Readable()
	}
	if err != nil {
		if im.backing != nil {
			im.backing.Close()
		}
		return nil, fmt.Errorf("%s: qcow2: %w", src.Path, err)
	}
	im.q = q
	return im, nil
}

func closeIfCloser(x any) {
	if c, ok := x.(io.Closer); ok {
		c.Close()
	}
}

// ReadAt reads guest bytes; safe for concurrent use.
func (im *Image) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("qcow2: negative offset")
	}
	size := int64(im.h.Size)
	if off >= size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	n, err := im.q.ReadAt(p, off)
	if err == io.EOF {
		if n == len(p) {
			return n, nil
		}
		if off+int64(n) == size {
			return n, io.EOF
		}
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		// An I/O error of the file stays one (exit 1); anything else the
		// library met (a short read past the end of a truncated file, a
		// cluster that does not inflate) is a corrupt image (exit 3).
		var pe *os.PathError
		if errors.As(err, &pe) || errors.Is(err, image.ErrCorrupt) || errors.Is(err, image.ErrUnsupported) {
			return n, fmt.Errorf("%s: qcow2: reading guest offset %d: %w", im.src.Path, off+int64(n), err)
		}
		return n, &image.FormatError{Path: im.src.Path, Format: "qcow2", Offset: -1,
			Rule: fmt.Sprintf("reading guest offset %d: %v", off+int64(n), err), Err: image.ErrCorrupt}
	}
	return n, nil
}

// Size is the virtual size.
func (im *Image) Size() int64 { return int64(im.h.Size) }

// Extent reports unallocated clusters (without a backing file to show
// through) and zero clusters as zero runs.
func (im *Image) Extent(off, n int64) (image.Extent, error) {
	size := int64(im.h.Size)
	if off < 0 || off >= size {
		return image.Extent{}, io.EOF
	}
	n = min(n, size-off)
	if im.h.Incompatible&incompatExtendedL2 != 0 {
		// The library re-reads an extended L2 table for every cluster it
		// looks at; keep the question short.
		n = min(n, im.cluster)
	} else {
		// The library walks the map cluster by cluster: bound the walk
		// (4096 clusters: 256 MiB at 64 KiB, 2 MiB at 512 B).
		n = min(n, 4096*im.cluster)
	}
	aligned := off / im.cluster * im.cluster
	e, err := im.q.Extent(aligned, min(n+(off-aligned), size-aligned))
	if err != nil {
		return image.Extent{}, fmt.Errorf("%s: qcow2: allocation of guest offset %d: %w", im.src.Path, off, err)
	}
	end := min(e.Start+e.Length, off+n)
	if end <= off {
		// Cannot happen for a well-formed answer; never report an empty run.
		return image.Extent{Start: off, Length: min(n, im.cluster-(off-aligned))}, nil
	}
	return image.Extent{Start: off, Length: end - off, Zero: e.Zero}, nil
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

// limaAdapter shows one of our images to go-qcow2reader as a backing image.
type limaAdapter struct{ im image.Image }

func (a limaAdapter) ReadAt(p []byte, off int64) (int, error) { return a.im.ReadAt(p, off) }
func (a limaAdapter) Close() error                            { return nil } // closed by Image.Close
func (a limaAdapter) Type() limaimage.Type                    { return limaimage.Type(a.im.Info().Format) }
func (a limaAdapter) Size() int64                             { return a.im.Size() }
func (a limaAdapter) Readable() error                         { return nil }
func (a limaAdapter) Extent(start, length int64) (limaimage.Extent, error) {
	e, err := a.im.Extent(start, length)
	if err != nil {
		return limaimage.Extent{}, err
	}
	// go-qcow2reader stretches the answer to a whole cluster of the child:
	// a zero run that ends inside it must not hide the data after it.
	if e.Zero && e.Length < length {
		return limaimage.Extent{Start: start, Length: length, Allocated: true}, nil
	}
	return limaimage.Extent{Start: e.Start, Length: e.Length, Allocated: !e.Zero, Zero: e.Zero}, nil
}
