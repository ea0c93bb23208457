// Package guestfs reads the file systems of a guest disk for the import
// check, read-only and bounded: Probe names a partition's file system from
// its superblock (ext2/3/4, xfs, NTFS, vfat, swap, LVM2, LUKS, btrfs, md,
// ISO 9660); OpenExt4 and OpenXFS read ext4 and xfs; a Tree resolves paths
// in one of them as the guest would, following symlinks. Every on-disk
// field is checked before use; structures not read return ErrUnsupported.
package guestfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
)

// FS is a read-only file system reader (ext4, xfs) reduced to what
// path lookup needs. Inode numbers are the file system's own.
type FS interface {
	RootIno() uint64
	Inode(ino uint64) (*Inode, error)
	// readDir lists a directory; "." and ".." may or may not be included.
	ReadDir(in *Inode) ([]DirEntry, error)
	// readAt reads file (or symlink target) bytes; like io.ReaderAt, it
	// returns io.EOF at the end of the file.
	ReadAt(in *Inode, p []byte, off int64) (int, error)
}

// Inode is a file system's inode, as much as lookup needs.
type Inode struct {
	Ino  uint64
	mode uint16 // the Unix mode: type bits and permissions
	size int64
	raw  []byte // the on-disk inode, for the file system's own use
}

// Size is the file's size in bytes.
func (i *Inode) Size() int64 { return i.size }

func (i *Inode) IsDir() bool     { return i.mode&0xf000 == 0x4000 }
func (i *Inode) IsSymlink() bool { return i.mode&0xf000 == 0xa000 }
func (i *Inode) IsRegular() bool { return i.mode&0xf000 == 0x8000 }

// DirEntry is one entry of a directory.
type DirEntry struct {
	Name string
	Ino  uint64
}

// Limits on what the readers accept from a file system.
const (
	maxSymlinks   = 40
	maxSymlinkLen = 4096
	maxDirBytes   = 32 << 20
	maxDirEntries = 1 << 20
	maxDirCache   = 4096
)

var ErrNotFound = fs.ErrNotExist

// ErrUnsupported marks structures the readers do not read (xfs B+Tree
// directories, ...): the in-file-system rules are then partly unchecked.
var ErrUnsupported = errors.New("not supported by the file system reader")

// Tree resolves paths inside one file system, following symlinks as the
// guest would with this file system mounted at /.
type Tree struct {
	FS   FS
	dirs map[uint64][]DirEntry
}

func NewTree(f FS) *Tree { return &Tree{FS: f, dirs: map[uint64][]DirEntry{}} }

func (t *Tree) List(in *Inode) ([]DirEntry, error) {
	if d, ok := t.dirs[in.Ino]; ok {
		return d, nil
	}
	d, err := t.FS.ReadDir(in)
	if err != nil {
		return nil, err
	}
	if len(t.dirs) < maxDirCache {
		t.dirs[in.Ino] = d
	}
	return d, nil
}

// lookup finds the inode of an absolute path; the last component's symlink
// is followed when follow is set.
func (t *Tree) Lookup(path string, follow bool) (*Inode, error) {
	root, err := t.FS.Inode(t.FS.RootIno())
	if err != nil {
		return nil, err
	}
	if !root.IsDir() {
		return nil, fmt.Errorf("root inode %d is not a directory", root.Ino)
	}
	stack := []*Inode{root}
	rest := splitPath(path)
	links := 0
	for len(rest) > 0 {
		name := rest[0]
		rest = rest[1:]
		switch name {
		case ".":
			continue
		case "..":
			if len(stack) > 1 {
				stack = stack[:len(stack)-1]
			}
			continue
		}
		dir := stack[len(stack)-1]
		if !dir.IsDir() {
			return nil, fmt.Errorf("%s: %w (a component is not a directory)", path, ErrNotFound)
		}
		entries, err := t.List(dir)
		if err != nil {
			return nil, err
		}
		var ino uint64
		for _, e := range entries {
			if e.Name == name {
				ino = e.Ino
				break
			}
		}
		if ino == 0 {
			return nil, fmt.Errorf("%s: %w", path, ErrNotFound)
		}
		in, err := t.FS.Inode(ino)
		if err != nil {
			return nil, err
		}
		if in.IsSymlink() && (len(rest) > 0 || follow) {
			links++
			if links > maxSymlinks {
				return nil, fmt.Errorf("%s: too many levels of symbolic links", path)
			}
			target, err := t.Readlink(in)
			if err != nil {
				return nil, err
			}
			if strings.HasPrefix(target, "/") {
				stack = stack[:1]
			}
			rest = append(splitPath(target), rest...)
			continue
		}
		stack = append(stack, in)
	}
	return stack[len(stack)-1], nil
}

func splitPath(p string) []string {
	var out []string
	for _, c := range strings.Split(p, "/") {
		if c != "" {
			out = append(out, c)
		}
	}
	return out
}

func (t *Tree) Readlink(in *Inode) (string, error) {
	if in.size <= 0 || in.size > maxSymlinkLen {
		return "", fmt.Errorf("symlink inode %d has the invalid length %d", in.Ino, in.size)
	}
	b := make([]byte, in.size)
	n, err := t.FS.ReadAt(in, b, 0)
	if n < len(b) {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return "", fmt.Errorf("symlink inode %d: %w", in.Ino, err)
	}
	return string(b), nil
}

// readFile reads a regular file (following symlinks), at most max bytes.
func (t *Tree) ReadFile(path string, max int64) ([]byte, error) {
	in, err := t.Lookup(path, true)
	if err != nil {
		return nil, err
	}
	if !in.IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	n := min(in.size, max)
	b := make([]byte, n)
	got, err := t.FS.ReadAt(in, b, 0)
	if got < len(b) {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return b, nil
}

// exists reports whether path names anything (a dangling symlink counts).
func (t *Tree) Exists(path string) bool {
	_, err := t.Lookup(path, false)
	return err == nil
}

// readDir lists a directory by path, without "." and "..".
func (t *Tree) ReadDir(path string) ([]DirEntry, error) {
	in, err := t.Lookup(path, true)
	if err != nil {
		return nil, err
	}
	if !in.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", path)
	}
	d, err := t.List(in)
	if err != nil {
		return nil, err
	}
	out := make([]DirEntry, 0, len(d))
	for _, e := range d {
		if e.Name != "." && e.Name != ".." {
			out = append(out, e)
		}
	}
	return out, nil
}
