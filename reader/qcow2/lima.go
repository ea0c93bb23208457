package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	limaimage "github.com/lima-vm/go-qcow2reader/image"
	limaqcow2 "github.com/lima-vm/go-qcow2reader/image/qcow2"
	limalog "github.com/lima-vm/go-qcow2reader/log"

	"vmimport/reader/image"
)

// Images without extended L2 entries are read through
// github.com/lima-vm/go-qcow2reader, after checkTables has walked every
// table: the library trusts header fields with allocations and opens
// backing files on its own, so it sees the file only once every field is
// checked, and a backing file only as the image we opened under our rules.
// Extended-L2 images are read by our own map (l2.go): the library re-reads
// and decodes a whole L2 table for every cluster and reads one subcluster
// at a time, 25-75x slower than qemu-img on such images.

// registerOnce sets go-qcow2reader's package-level decompressor table and
// warning logger: process-wide state, set here and nowhere else, once,
// before the first image is opened. The decompressors are our pooled
// inflaters (decompress.go).
var registerOnce sync.Once

func register() {
	registerOnce.Do(func() {
		limaqcow2.SetDecompressor(limaqcow2.CompressionTypeZlib, func(r io.Reader) (io.ReadCloser, error) {
			return newLimaInflater(r, false)
		})
		limaqcow2.SetDecompressor(limaqcow2.CompressionTypeZstd, func(r io.Reader) (io.ReadCloser, error) {
			return newLimaInflater(r, true)
		})
		// Our own header checks report what the library would warn about.
		limalog.SetWarnFunc(nil)
	})
}

// limaInflater is a pooled inflater as the library wants one: it reads the
// compressed bytes whole (one pread, bounded), and Read fills the caller's
// buffer completely, so the library never re-inflates after a short read.
type limaInflater struct {
	z   *inflater
	dec io.Reader
}

func newLimaInflater(r io.Reader, isZstd bool) (io.ReadCloser, error) {
	z := inflaters.Get().(*inflater)
	in, err := readAllBounded(r, z.in[:0], maxCompressedCluster)
	z.in = in
	if err != nil {
		z.put()
		return nil, err
	}
	dec, err := z.reset(isZstd)
	if err != nil {
		z.put()
		return nil, err
	}
	return &limaInflater{z: z, dec: dec}, nil
}

func (l *limaInflater) Read(p []byte) (int, error) {
	n, err := io.ReadFull(l.dec, p)
	if err == io.ErrUnexpectedEOF {
		err = io.EOF
	}
	return n, err
}

func (l *limaInflater) Close() error {
	if l.z != nil {
		l.z.put()
		l.z, l.dec = nil, nil
	}
	return nil
}

// maxCompressedCluster bounds the compressed bytes read for one cluster:
// a 2 MiB cluster plus the sector count's slack.
const maxCompressedCluster = 2<<20 + 512*1024

func readAllBounded(r io.Reader, dst []byte, limit int) ([]byte, error) {
	for {
		if len(dst) == cap(dst) {
			if len(dst) >= limit {
				return dst, nil
			}
			dst = append(dst, 0)[:len(dst)]
		}
		n, err := r.Read(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+n]
		if err == io.EOF {
			return dst, nil
		}
		if err != nil {
			return dst, err
		}
	}
}

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

// openLima opens the checked image in src with go-qcow2reader; backing is
// the backing image we opened, or nil.
func openLima(src image.Source, h *header, backing image.Image) (*limaqcow2.Qcow2, error) {
	register()
	var ra io.ReaderAt = plainReaderAt{src.R}
	var open limaimage.OpenWithType
	if backing != nil {
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
		return nil, fmt.Errorf("%s: qcow2: %w", src.Path, err)
	}
	return q, nil
}

func closeIfCloser(x any) {
	if c, ok := x.(io.Closer); ok {
		c.Close()
	}
}

// limaReadAt reads guest bytes through the library; off and len(p) are
// within the virtual size.
func (im *Image) limaReadAt(p []byte, off int64) (int, error) {
	size := im.Size()
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

// limaExtent reports unallocated clusters (without a backing file to show
// through) and zero clusters as zero runs, from the library's map.
func (im *Image) limaExtent(off, n int64) (image.Extent, error) {
	size := im.Size()
	// The library walks the map cluster by cluster: bound the walk (4096
	// clusters: 256 MiB at 64 KiB, 2 MiB at 512 B).
	n = min(n, 4096*im.cluster)
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
