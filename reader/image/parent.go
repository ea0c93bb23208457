package image

import (
	"errors"
	"fmt"
	"io"
	"slices"
)

// Parent is what a child image (a QCOW2 with a backing file, a VHD or
// VHDX differencing disk, a VMDK delta disk) records of the image it was
// made from.
type Parent struct {
	// Format is the child's format, for messages: "vhd".
	Format string
	// Kind says what the child is, for the message when backing files are
	// not allowed: "differencing disk with parent", "image has backing
	// file".
	Kind string
	// Names are the file names the child records, best first; the first
	// one that resolves (ResolveName) is opened.
	Names []string
	// Offset is where the child records the parent, for errors; -1 when
	// no single place does.
	Offset int64
	// IDs, when set, are the identities the parent may carry (a VHD's
	// UUID, a VHDX's data write GUID): the opened parent must implement
	// Identity, be of format Format, and carry one of them. IDName names
	// the identity in messages ("UUID").
	IDs    []string
	IDName string
}

// Identity is implemented by images that children name by an identity
// besides a file name.
type Identity interface {
	// Identity returns the image's format and the identity a child of
	// that format records for its parent.
	Identity() (format, id string)
}

// IdentityOf returns the identity of im, or of the image it wraps; ok is
// false when neither has one.
func IdentityOf(im Image) (format, id string, ok bool) {
	for range MaxChainDepth {
		if im == nil {
			return "", "", false
		}
		if i, yes := im.(Identity); yes {
			format, id = i.Identity()
			return format, id, true
		}
		u, yes := im.(interface{ Unwrap() Image })
		if !yes {
			return "", "", false
		}
		im = u.Unwrap()
	}
	return "", "", false
}

// OpenParent opens the parent p of the image in src through opts.Open,
// when opts allow backing files: each name is resolved with ResolveName
// (inside the child's folder, or an allowed one; on the child's host for
// a remote child) and the first that resolves is opened; its identity is
// checked when p.IDs is set. It returns the parent and the name that
// opened it. Errors from the chain (loops, depth) go up unchanged.
func OpenParent(src Source, opts *Options, p Parent) (Image, string, error) {
	first := ""
	if len(p.Names) > 0 {
		first = p.Names[0]
	}
	if opts == nil || !opts.AllowBacking || opts.Open == nil {
		return nil, first, fmt.Errorf("%s: %s: %s %q: %w: pass --allow-backing to read through the backing chain", src.Path, p.Format, p.Kind, first, ErrNotAllowed)
	}
	if len(p.Names) == 0 {
		return nil, "", Corruptf(src.Path, p.Format, p.Offset, "%s names no usable file", p.Kind)
	}
	var firstErr error
	for _, name := range p.Names {
		resolved, err := ResolveName(src.Path, name, opts)
		if err != nil {
			// Report the first refusal by the path rule, else the first
			// error: a rule broken matters more than a missing candidate.
			if firstErr == nil || (errors.Is(err, ErrNotAllowed) && !errors.Is(firstErr, ErrNotAllowed)) {
				firstErr = err
			}
			continue
		}
		parent, err := opts.Open(resolved, opts.Depth+1)
		if err != nil {
			return nil, name, WrapChain(err, "%s: %s: parent %q", src.Path, p.Format, name)
		}
		if len(p.IDs) > 0 {
			format, id, _ := IdentityOf(parent)
			if format != p.Format || !slices.Contains(p.IDs, id) {
				parent.Close()
				if format == "" {
					format = parent.Info().Format
				}
				return nil, name, Corruptf(src.Path, p.Format, p.Offset, "parent %q is %s with %s %q, the child expects a %s with %s %s", name, format, p.IDName, id, p.Format, p.IDName, p.IDs[0])
			}
		}
		return parent, name, nil
	}
	return nil, first, fmt.Errorf("%s: %s: parent: %w", src.Path, p.Format, firstErr)
}

// ReadParent fills buf with the parent's bytes at off: what a child reads
// where it holds nothing of its own. Past the parent's end (a parent may
// be smaller than the child) it reads as zeros; a nil parent reads as
// zeros. path and format name the child in errors.
func ReadParent(parent Image, buf []byte, off int64, path, format string) error {
	if parent == nil || off >= parent.Size() {
		clear(buf)
		return nil
	}
	k := int(min(int64(len(buf)), parent.Size()-off))
	n, err := parent.ReadAt(buf[:k], off)
	if n == k {
		err = nil
	} else if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return fmt.Errorf("%s: %s: reading parent at offset %d: %w", path, format, off, err)
	}
	clear(buf[k:])
	return nil
}

// ParentExtent is the allocation of a run of at most n bytes at off that
// a child takes from its parent: as the parent reports it, and a zero run
// past the parent's end. The run starts at off and is at least one byte
// long.
func ParentExtent(parent Image, off, n int64, path, format string) (Extent, error) {
	if parent == nil || off >= parent.Size() {
		return Extent{Start: off, Length: n, Zero: true}, nil
	}
	k := min(n, parent.Size()-off)
	e, err := parent.Extent(off, k)
	if err != nil {
		return Extent{}, fmt.Errorf("%s: %s: parent allocation at %d: %w", path, format, off, err)
	}
	if e.Start != off || e.Length <= 0 {
		return Extent{Start: off, Length: k}, nil
	}
	return Extent{Start: off, Length: min(e.Length, k), Zero: e.Zero}, nil
}
