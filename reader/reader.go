// Package reader opens a virtual disk image of any supported format.
//
// Open detects the format from magic bytes, never from the file name, trying
// formats in a fixed order with RAW last. Each format is read by its own
// package below reader/, behind the image.Image interface.
package reader

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"

	"vmimport/reader/image"
	"vmimport/reader/ova"
	"vmimport/reader/qcow2"
	"vmimport/reader/raw"
	"vmimport/reader/vdi"
	"vmimport/reader/vhd"
	"vmimport/reader/vhdx"
	"vmimport/reader/vmdk"
)

// Image is a virtual disk opened for reading; see image.Image.
type Image = image.Image

// Options bound what Open may read besides the named file.
type Options = image.Options

type opener func(src image.Source, opts *image.Options) (image.Image, error)

// probes lists the formats in the order Open tries them. RAW, which matches
// anything, is not in the list: it comes last. Every format qemu-img 7.2
// probes for is here (bochs, cloop, dmg, luks, parallels, qcow, qcow2,
// qed, vdi, vhdx, vmdk, vpc; vvfat has no probe, it reads a folder): a file
// qemu-img would read as one of them is read as it, or refused naming it,
// never read as RAW. Most probes are wider than qemu's (a magic alone, any
// version): when in doubt, a file is refused rather than read as RAW.
func probes() []probe {
	return []probe{
		{name: "QCOW2", sig: `"QFI\\xfb" at offset 0`, detect: isQCOW(2), open: func(s image.Source, o *image.Options) (image.Image, error) { return qcow2.Open(s, o) }},
		{name: "QCOW version 1", sig: `"QFI\\xfb" version 1 at offset 0`, detect: isQCOW(1), hint: "convert it with qemu-img to qcow2 first"},
		{name: "QED", sig: `"QED\\0" at offset 0`, detect: magic("QED\x00"), hint: "convert it with qemu-img to qcow2 first"},
		{name: "VMDK", sig: `"KDMV" or "COWD" at offset 0`, detect: isVMDKSparse, open: func(s image.Source, o *image.Options) (image.Image, error) { return vmdk.Open(s, o) }},
		{name: "VMDK descriptor", sig: "a text descriptor", detect: isVMDKDescriptor, open: func(s image.Source, o *image.Options) (image.Image, error) { return vmdk.Open(s, o) }},
		{name: "VHDX", sig: `"vhdxfile" at offset 0`, detect: magic("vhdxfile"), open: func(s image.Source, o *image.Options) (image.Image, error) { return vhdx.Open(s, o) }},
		{name: "VHD", sig: `"conectix" at the start or in the last sector`, detect: isVHD, open: func(s image.Source, o *image.Options) (image.Image, error) { return vhd.Open(s, o) }},
		{name: "VDI", sig: "the VDI banner or signature 0xbeda107f at offset 0x40", detect: isVDI, open: func(s image.Source, o *image.Options) (image.Image, error) { return vdi.Open(s, o) }},
		{name: "Parallels", sig: `"WithoutFreeSpace" or "WithouFreSpacExt" at offset 0`, detect: isParallels, hint: "convert it with qemu-img to qcow2 first"},
		{name: "Bochs", sig: `"Bochs Virtual HD Image" at offset 0`, detect: magic("Bochs Virtual HD Image\x00"), hint: "convert it with qemu-img to qcow2 first"},
		{name: "cloop", sig: "the cloop V2.0 shell header at offset 0", detect: magic(cloopMagic), hint: "convert it with qemu-img to qcow2 first"},
		{name: "LUKS", sig: `"LUKS\xba\xbe" at offset 0`, detect: magic("LUKS\xba\xbe"), hint: "an encrypted volume: decrypt it first (qemu-img convert with its key secret, or cryptsetup open and read the mapped device)"},
		{name: "ISO 9660", sig: `"CD001" at offset 0x8001`, detect: isISO, hint: "an installer or CD image is not a system disk: install the system onto a disk and import that disk"},
		{name: "OVA/tar", sig: "a tar header", detect: isTar, open: func(s image.Source, o *image.Options) (image.Image, error) { return ova.Open(s, o, Detect) }},
		{name: "DMG", sig: `a "koly" trailer in the last 512 bytes`, detect: isDMG, hint: "convert it with qemu-img to qcow2 first"},
		{name: "gzip-compressed", detect: magic("\x1f\x8b"), hint: "decompress it first (gunzip -k)"},
		{name: "xz-compressed", detect: magic("\xfd7zXZ\x00"), hint: "decompress it first (xz -dk)"},
		{name: "zstd-compressed", detect: magic("\x28\xb5\x2f\xfd"), hint: "decompress it first (zstd -d)"},
		{name: "bzip2-compressed", detect: magic("BZh"), hint: "decompress it first (bunzip2 -k)"},
		{name: "zip archive", detect: magic("PK\x03\x04"), hint: "unpack it first (unzip)"},
	}
}

// Open opens the image at path: a file, a block device, or with
// opts.Remote a URL (https://, http://, s3://). The caller closes it.
func Open(path string, opts Options) (Image, error) {
	return open(path, opts, nil)
}

// link is one file of a backing chain, as opened.
type link struct {
	path string
	fi   os.FileInfo // nil for a remote file
}

// same reports whether l is the file f (the same inode, or the same URL).
func (l link) same(f *image.File) bool {
	if l.fi == nil || f.OS == nil {
		return l.fi == nil && f.OS == nil && l.path == f.Path
	}
	fi, err := f.OS.Stat()
	return err == nil && os.SameFile(l.fi, fi)
}

// open opens path (a file, or with opts.Remote a URL) as the next file of
// chain (the files that led to it, first the one the user named). A file
// that is already in the chain is a loop; a chain longer than
// MaxChainDepth, or than the open-file limit allows, ends with a
// ChainError too.
func open(path string, opts Options, chain []link) (Image, error) {
	if len(chain) >= image.MaxChainDepth {
		return nil, &image.ChainError{First: chain[0].path, By: chain[len(chain)-1].path, Depth: len(chain), Err: image.ErrUnsupported}
	}
	f, err := image.OpenFile(path, &opts)
	if err != nil {
		if len(chain) > 0 && (errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)) {
			return nil, &image.ChainError{First: chain[0].path, By: chain[len(chain)-1].path, Depth: len(chain), Limit: image.FileLimit(), Err: image.ErrUnsupported}
		}
		return nil, err
	}
	l := link{path: f.Path}
	if f.OS != nil {
		if l.fi, err = f.OS.Stat(); err != nil {
			f.Close()
			return nil, err
		}
	}
	for i, c := range chain {
		if c.same(f) {
			f.Close()
			return nil, &image.ChainError{First: chain[0].path, By: chain[len(chain)-1].path, Repeat: f.Path, Index: i + 1, Depth: len(chain), Err: image.ErrCorrupt}
		}
	}
	chain = append(chain[:len(chain):len(chain)], l)
	o := opts
	o.Depth = opts.Depth + len(chain) - 1
	o.Open = func(p string, _ int) (image.Image, error) { return open(p, opts, chain) }
	im, err := Detect(f.Source, &o)
	if err != nil {
		f.Close()
		return nil, err
	}
	return &fileImage{Image: im, f: f}, nil
}

// Detect opens src, whose bytes are already at hand (a file, a section of
// an OVA), as whatever format its magic bytes say.
func Detect(src image.Source, opts *image.Options) (Image, error) {
	if src.Size == 0 {
		return nil, fmt.Errorf("%s: empty file (0 bytes): not a disk image", src.Path)
	}
	head := make([]byte, min(src.Size, headSize))
	if err := image.ReadFull(src.R, src.Size, head, 0, src.Path, "input", "first bytes"); err != nil {
		return nil, err
	}
	var tail []byte
	if src.Size >= 512 {
		tail = make([]byte, 512)
		if err := image.ReadFull(src.R, src.Size, tail, src.Size-512, src.Path, "input", "last sector"); err != nil {
			return nil, err
		}
	}
	for _, p := range probes() {
		if !p.detect(head, tail, src.Size) {
			continue
		}
		if p.open == nil { // recognised, not read: the hint says what to do
			return nil, fmt.Errorf("%s: %s input is not supported: %s: %w", src.Path, p.name, p.hint, image.ErrUnsupported)
		}
		im, err := p.open(src, opts)
		if errors.Is(err, image.ErrWrongFormat) {
			// The signature is there but the reader found no image
			// behind it: a truncated or damaged file, never RAW.
			return nil, &image.FormatError{Path: src.Path, Format: p.name, Offset: -1,
				Rule: fmt.Sprintf("a truncated or corrupt %s: the file carries its signature (%s), but %s", p.name, p.sig, wrongWhy(err)), Err: image.ErrCorrupt}
		}
		return im, err
	}
	sub := "file"
	switch {
	case src.Remote:
		sub = "remote file"
	case src.Device:
		sub = "block device"
	case src.Fd < 0:
		sub = "section"
	}
	return raw.Open(src, sub)
}

// wrongWhy is the reason of an ErrWrongFormat error: what follows its
// "wrong format: not X: " prefix.
func wrongWhy(err error) string {
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		return msg[i+2:]
	}
	return msg
}

// fileImage closes the file an image was opened from.
type fileImage struct {
	image.Image
	f *image.File
}

// Unwrap returns the image read from the file, for image.Verify.
func (fi *fileImage) Unwrap() image.Image { return fi.Image }

// Files is the file itself and every file the image reads besides.
func (fi *fileImage) Files() []*os.File {
	var own []*os.File
	if fi.f.OS != nil {
		own = append(own, fi.f.OS)
	}
	return append(own, image.Files(fi.Image)...)
}

func (fi *fileImage) Close() error {
	err := fi.Image.Close()
	if err2 := fi.f.Close(); err == nil {
		err = err2
	}
	return err
}
