package check

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"

	"vmimport/check/internal/guestfs"
	"vmimport/reader/image"
)

// extenter is the allocation map of an image.Image.
type extenter interface {
	Extent(off, n int64) (image.Extent, error)
}

// scanChunk is the read size of FirstData.
const scanChunk = 1 << 20

// FirstData returns the offset of the first non-zero byte of d at or after
// from, or -1 when everything from there to the end reads as zero. When d
// has an allocation map (Extent), runs it calls zero are never read.
func FirstData(ctx context.Context, d Disk, from int64) (int64, error) {
	size := d.Size()
	ex, _ := d.(extenter)
	buf := make([]byte, scanChunk)
	zero := make([]byte, scanChunk)
	for off := max(from, 0); off < size; {
		if err := ctx.Err(); err != nil {
			return -1, err
		}
		end := size
		if ex != nil {
			e, err := ex.Extent(off, size-off)
			if err != nil {
				return -1, fmt.Errorf("allocation map at offset %d: %w", off, err)
			}
			if e.Start != off || e.Length <= 0 {
				return -1, fmt.Errorf("allocation map at offset %d: bad answer [%d, +%d)", off, e.Start, e.Length)
			}
			if e.Zero {
				off += e.Length
				continue
			}
			end = min(off+e.Length, size)
		}
		for off < end {
			n := min(int64(scanChunk), end-off)
			if err := guestfs.ReadFull(d, buf[:n], off, size); err != nil {
				return -1, fmt.Errorf("reading %d bytes at offset %d: %w", n, off, err)
			}
			if !bytes.Equal(buf[:n], zero[:n]) {
				for i, b := range buf[:n] {
					if b != 0 {
						return off + int64(i), nil
					}
				}
			}
			off += n
			if ex != nil {
				break // ask the map again: the next run may be zero
			}
		}
	}
	return -1, nil
}

// Shrink returns im cut to size bytes, for --shrink: it first checks that
// every byte beyond size reads as zero and fails, wrapping ErrRule and
// naming the first offset, when one does not. An image no larger than size
// is returned as it is. Partition ends are checked by Run.
func Shrink(ctx context.Context, im image.Image, size int64) (image.Image, error) {
	if size <= 0 || size >= im.Size() {
		return im, nil
	}
	off, err := FirstData(ctx, im, size)
	if err != nil {
		return nil, fmt.Errorf("--shrink: checking the bytes beyond %d: %w", size, err)
	}
	if off >= 0 {
		return nil, ruleErrorf("--shrink: non-zero data at offset %d, beyond the requested system disk size (%d bytes); shrink the file systems and partitions in the guest first, or ask for a larger disk", off, size)
	}
	return &shrunk{Image: im, size: size}, nil
}

// shrunk is an image cut to a smaller virtual size.
type shrunk struct {
	image.Image
	size int64
}

func (s *shrunk) Size() int64 { return s.size }

// Unwrap returns the whole image, for image.Verify (an OVA's digest covers
// the whole disk file, which the pass still reads in full where it holds data).
func (s *shrunk) Unwrap() image.Image { return s.Image }

func (s *shrunk) ReadAt(p []byte, off int64) (int, error) {
	if off >= s.size {
		return 0, io.EOF
	}
	if int64(len(p)) > s.size-off {
		n, err := s.Image.ReadAt(p[:s.size-off], off)
		if err == nil {
			err = io.EOF
		}
		return n, err
	}
	return s.Image.ReadAt(p, off)
}

func (s *shrunk) Extent(off, n int64) (image.Extent, error) {
	if off < 0 || off >= s.size {
		return image.Extent{}, fmt.Errorf("extent at offset %d outside the shrunk disk of %d bytes", off, s.size)
	}
	e, err := s.Image.Extent(off, min(n, s.size-off))
	if err != nil {
		return e, err
	}
	if e.Start+e.Length > s.size {
		e.Length = s.size - e.Start
	}
	return e, nil
}

func (s *shrunk) Info() image.Info {
	in := s.Image.Info()
	in.Fields = append(slices.Clip(in.Fields), image.Field{Name: "shrunk from", Value: fmt.Sprintf("%d bytes", in.VirtualSize)})
	in.VirtualSize = s.size
	return in
}
