// Package image defines what every source format reader provides: the Image
// interface, its allocation map (Extent), its description (Info), the options
// that bound what a reader may open, and the errors readers wrap.
//
// Each format lives in its own package below reader/ and depends only on this
// one; package reader detects the format and opens the right one.
package image

import (
	"errors"
	"fmt"
	"io"
)

// Image is a virtual disk opened for reading.
//
// ReadAt reads the guest-visible bytes: it is safe for concurrent use, fills p
// completely unless off+len(p) passes Size, and then returns the bytes up to
// Size with io.EOF, like os.File.
type Image interface {
	io.ReaderAt
	// Size is the virtual size in bytes.
	Size() int64
	// Extent describes the run of bytes starting at off, at most n bytes long
	// and at least one byte long when off < Size. A run with Zero set reads as
	// zeros and need not be read; a run without it may still hold zeros.
	Extent(off, n int64) (Extent, error)
	// Info describes the image for people and scripts.
	Info() Info
	Close() error
}

// Extent is a run of the virtual disk with one allocation status.
type Extent struct {
	Start  int64 `json:"start"`
	Length int64 `json:"length"`
	// Zero is set when the run is known to read as zeros (unallocated, a zero
	// cluster, a hole), so the bytes need not be read.
	Zero bool `json:"zero"`
}

// Info describes an opened image. Fields that do not apply stay empty.
type Info struct {
	Format      string `json:"format"`              // "qcow2", "vmdk", "raw", ...
	Subformat   string `json:"subformat,omitempty"` // "v3", "streamOptimized", "dynamic", ...
	VirtualSize int64  `json:"virtual_size"`
	// ClusterSize is the allocation unit: cluster, grain or block size.
	ClusterSize int64 `json:"cluster_size,omitempty"`
	// Compression names the codec of compressed clusters or grains, if any.
	Compression string `json:"compression,omitempty"`
	// Backing is the parent image, if any, already opened and described.
	Backing *Info `json:"backing,omitempty"`
	// BackingFile is the file name as the image records it.
	BackingFile string `json:"backing_file,omitempty"`
	// Path is the file the image was opened from.
	Path string `json:"path,omitempty"`
	// Fields are format-specific facts worth showing (creator, create type,
	// geometry, ...), in display order.
	Fields []Field `json:"fields,omitempty"`
}

// Field is one format-specific fact. Value says it for people; Data, if
// set, is the same fact typed (a number, a bool, an object), which JSON
// gives as the value (and Value as "text" when it says more).
type Field struct {
	Name  string
	Value string
	Data  any
}

// Fact is a typed fact: its Value is Data as Go prints it, or text.
func Fact(name string, data any, text ...string) Field {
	f := Field{Name: name, Value: fmt.Sprint(data), Data: data}
	if len(text) > 0 {
		f.Value = text[0]
	}
	return f
}

// Opener opens another image file with format detection and the same
// options; readers use it for backing files, parents and extents. depth is the
// length of the chain so far, so that loops end.
type Opener func(path string, depth int) (Image, error)

// Options bound what a reader may do beyond the file it was handed.
type Options struct {
	// AllowBacking permits opening backing files, parents and delta chains.
	AllowBacking bool
	// AllowPaths are extra folders that backing files and extents may live in,
	// besides the folder of the image that names them: local folders, or
	// URL prefixes (https://host/exports/, s3://bucket/prefix/) for remote
	// images and for local images that name a URL.
	AllowPaths []string
	// Disk picks the disk of a multi-disk container (OVA), counting from 0.
	Disk int
	// Warn receives non-fatal findings (a damaged backup header, ...). May be nil.
	Warn func(msg string)
	// Open opens a file named by an image (backing file, extent). Set by
	// package reader; nil means no file may be opened.
	Open Opener
	// Depth is the current chain depth, for Open.
	Depth int
	// Remote opens URLs: the source and the files a remote image names.
	// nil: URLs are refused.
	Remote Remote
}

// Warnf sends a warning to o.Warn, if set.
func (o *Options) Warnf(format string, args ...any) {
	if o != nil && o.Warn != nil {
		o.Warn(fmt.Sprintf(format, args...))
	}
}

// MaxChainDepth bounds backing chains and nested descriptors. qemu sets no
// limit; the real bound is the open-file limit (every file of the chain
// stays open while the disk is read), which package reader reports as a
// ChainError. This one only keeps a deliberate chain of tiny files from
// taking unbounded stack and memory: each level costs a few KiB.
const MaxChainDepth = 4096

// MaxVirtualSize bounds the virtual size any reader accepts: 64 TiB, far above
// any importable system disk, far below sizes whose arithmetic overflows.
const MaxVirtualSize int64 = 64 << 40

// Errors wrapped by every reader. Match them with errors.Is.
var (
	// ErrWrongFormat: the bytes are not of the format tried; detection goes on.
	ErrWrongFormat = errors.New("wrong format")
	// ErrUnsupported: the format was recognised but this feature or variant
	// cannot be read.
	ErrUnsupported = errors.New("unsupported")
	// ErrCorrupt: a structure breaks a rule of its format.
	ErrCorrupt = errors.New("corrupt image")
	// ErrNotAllowed: the image names a file outside what the options allow.
	ErrNotAllowed = errors.New("not allowed")
)

// FormatError describes a rule broken at an offset of a file.
type FormatError struct {
	Path   string // file, may be empty
	Format string // "qcow2", "vmdk", ...
	Offset int64  // byte offset in the file; -1 when none applies
	Rule   string // what is wrong, as a sentence fragment
	Err    error  // ErrCorrupt, ErrUnsupported, ...
}

func (e *FormatError) Error() string {
	where := e.Path
	if where == "" {
		where = "input"
	}
	if e.Offset >= 0 {
		return fmt.Sprintf("%s: %s: at offset %d: %s", where, e.Format, e.Offset, e.Rule)
	}
	return fmt.Sprintf("%s: %s: %s", where, e.Format, e.Rule)
}

func (e *FormatError) Unwrap() error { return e.Err }

// Corruptf returns a FormatError wrapping ErrCorrupt.
func Corruptf(path, format string, off int64, rule string, args ...any) error {
	return &FormatError{Path: path, Format: format, Offset: off, Rule: fmt.Sprintf(rule, args...), Err: ErrCorrupt}
}

// Unsupportedf returns a FormatError wrapping ErrUnsupported.
func Unsupportedf(path, format string, off int64, rule string, args ...any) error {
	return &FormatError{Path: path, Format: format, Offset: off, Rule: fmt.Sprintf(rule, args...), Err: ErrUnsupported}
}

// WrongFormat returns an error wrapping ErrWrongFormat.
func WrongFormat(format, why string) error {
	return fmt.Errorf("%w: not %s: %s", ErrWrongFormat, format, why)
}

// Source is a file handed to a format reader: the bytes, their length and
// the path they came from (used in errors and to resolve relative names).
type Source struct {
	R    io.ReaderAt
	Size int64
	// Path is the file's path, or for a remote file its URL with any
	// credentials redacted (names the file records resolve against it the
	// same way: a relative reference drops the query).
	Path string
	// Fd is the file descriptor behind R when R is a whole file, for
	// SEEK_DATA / SEEK_HOLE; -1 otherwise.
	Fd int
	// Device is set when the file is a block device.
	Device bool
	// Remote is set when the bytes come over the network (https://,
	// s3://): there is no Fd, and every read that misses the cache is a
	// request.
	Remote bool
}
