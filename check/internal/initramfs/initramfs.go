// Package initramfs lists the member names of an initramfs: one or more
// newc cpio archives, the first ones (early microcode) uncompressed, the
// last one usually compressed. Only the member names are collected; gzip
// and zstd are decoded, other compressions (xz, lz4, bzip2, lzo) are
// reported as not readable (ErrCompression).
package initramfs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/klauspost/compress/gzip"

	"github.com/klauspost/compress/zstd"
)

// Bounds of the initramfs reader.
const (
	maxInitramfsOut   = 2 << 30 // decompressed bytes
	maxInitramfsNames = 1 << 20
	maxCpioName       = 4096
	maxCpioSegments   = 16
	maxZstdWindow     = 64 << 20
)

// ErrCompression: the initramfs is compressed in a way not read here.
var ErrCompression = errors.New("compression not supported")

// Names lists the member names of an initramfs held in r (size bytes).
func Names(r io.ReaderAt, size int64) ([]string, error) {
	var names []string
	off := int64(0)
	for seg := 0; seg < maxCpioSegments; seg++ {
		// Skip the zero padding between archives.
		buf := make([]byte, 512)
		for {
			if off >= size {
				return names, nil
			}
			n, err := r.ReadAt(buf[:min(int64(len(buf)), size-off)], off)
			if n == 0 {
				return names, fmt.Errorf("reading at %d: %w", off, err)
			}
			i := 0
			for i < n && buf[i] == 0 {
				i++
			}
			off += int64(i)
			if i < n {
				break
			}
		}
		magic := make([]byte, 6)
		n, _ := r.ReadAt(magic, off)
		magic = magic[:n]
		sec := io.NewSectionReader(r, off, size-off)
		switch {
		case bytes.HasPrefix(magic, []byte("07070")):
			cr := &countReader{r: bufio.NewReader(sec)}
			if err := readCpio(cr, &names, true); err != nil {
				return names, err
			}
			off += cr.n
			continue
		case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
			z, err := gzip.NewReader(bufio.NewReader(sec))
			if err != nil {
				return names, err
			}
			return names, readCpio(io.LimitReader(z, maxInitramfsOut), &names, false)
		case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
			z, err := zstd.NewReader(bufio.NewReader(sec), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(maxZstdWindow), zstd.WithDecoderLowmem(true))
			if err != nil {
				return names, err
			}
			defer z.Close()
			return names, readCpio(io.LimitReader(z, maxInitramfsOut), &names, false)
		}
		return names, fmt.Errorf("%w: %s", ErrCompression, compressionName(magic))
	}
	return names, nil
}

func compressionName(magic []byte) string {
	switch {
	case bytes.HasPrefix(magic, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		return "xz"
	case bytes.HasPrefix(magic, []byte{0x02, 0x21, 0x4c, 0x18}), bytes.HasPrefix(magic, []byte{0x04, 0x22, 0x4d, 0x18}):
		return "lz4"
	case bytes.HasPrefix(magic, []byte("BZh")):
		return "bzip2"
	case bytes.HasPrefix(magic, []byte{0x89, 'L', 'Z', 'O'}):
		return "lzo"
	case bytes.HasPrefix(magic, []byte{0x5d, 0, 0}):
		return "lzma"
	}
	return fmt.Sprintf("unknown (magic %x)", magic)
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// readCpio reads newc archives from r, collecting member names. With
// single set it stops after the first trailer; otherwise it goes on with
// the next archive until the end of the stream.
func readCpio(r io.Reader, names *[]string, single bool) error {
	hdr := make([]byte, 110)
	pos := int64(0)
	skip := func(n int64) error {
		m, err := io.CopyN(io.Discard, r, n)
		pos += m
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	for {
		// Archives may be followed by zero padding before the next one.
		first := hdr[:1]
		for {
			if _, err := io.ReadFull(r, first); err != nil {
				if err == io.EOF && !single {
					return nil
				}
				return fmt.Errorf("cpio: %w", err)
			}
			pos++
			if first[0] != 0 {
				break
			}
		}
		if _, err := io.ReadFull(r, hdr[1:]); err != nil {
			return fmt.Errorf("cpio header: %w", err)
		}
		pos += 109
		if string(hdr[:5]) != "07070" || (hdr[5] != '1' && hdr[5] != '2') {
			return fmt.Errorf("cpio: bad magic %q", hdr[:6])
		}
		field := func(i int) (int64, error) {
			return strconv.ParseInt(string(hdr[6+8*i:14+8*i]), 16, 64)
		}
		fileSize, err1 := field(6)
		nameSize, err2 := field(11)
		if err1 != nil || err2 != nil || nameSize < 1 || nameSize > maxCpioName || fileSize < 0 {
			return fmt.Errorf("cpio: bad header")
		}
		name := make([]byte, nameSize)
		if _, err := io.ReadFull(r, name); err != nil {
			return fmt.Errorf("cpio name: %w", err)
		}
		pos += nameSize
		if err := skip((4 - pos%4) % 4); err != nil {
			return err
		}
		n := strings.TrimRight(string(name), "\x00")
		if n == "TRAILER!!!" {
			if single {
				return skip((4 - pos%4) % 4)
			}
			continue
		}
		if len(*names) >= maxInitramfsNames {
			return fmt.Errorf("cpio: more than %d members", maxInitramfsNames)
		}
		*names = append(*names, n)
		if err := skip(fileSize + (4-(pos+fileSize)%4)%4); err != nil {
			return err
		}
	}
}
