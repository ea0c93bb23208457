package check

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
)

// fileSystem is a read-only file system reader (ext4, xfs) reduced to what
// path lookup needs. Inode numbers are the file system's own.
type fileSystem interface {
	rootIno() uint64
	inode(ino uint64) (*inode, error)
	// readDir lists a directory; "." and ".." may or may not be included.
	readDir(in *inode) ([]dirEntry, error)
	// readAt reads file (or symlink target) bytes; like io.ReaderAt, it
	// returns io.EOF at the end of the file.
	readAt(in *inode, p []byte, off int64) (int, error)
}

// inode is a file system's inode, as much as lookup needs.
type inode struct {
	ino  uint64
	mode uint16 // the Unix mode: type bits and permissions
	size int64
	raw  []byte // the on-disk inode, for the file system's own use
}

func (i *inode) isDir() bool     { return i.mode&0xf000 == 0x4000 }
func (i *inode) isSymlink() bool { return i.mode&0xf000 == 0xa000 }
func (i *inode) isRegular() bool { return i.mode&0xf000 == 0x8000 }

type dirEntry struct {
	name string
	ino  uint64
}

// Limits on what the readers accept from a file system.
const (
	maxSymlinks   = 40
	maxSymlinkLen = 4096
	maxDirBytes   = 32 << 20
	maxDirEntries = 1 << 20
	maxDirCache   = 4096
)

var errNotFound = fs.ErrNotExist

// errUnsupported marks structures the readers do not read (xfs B+tree
// directories, ...): the in-file-system rules are then partly unchecked.
var errUnsupported = errors.New("not supported by the file system reader")

// tree resolves paths inside one file system, following symlinks as the
// guest would with this file system mounted at /.
type tree struct {
	fs   fileSystem
	dirs map[uint64][]dirEntry
}

func newTree(f fileSystem) *tree { return &tree{fs: f, dirs: map[uint64][]dirEntry{}} }

func (t *tree) list(in *inode) ([]dirEntry, error) {
	if d, ok := t.dirs[in.ino]; ok {
		return d, nil
	}
	d, err := t.fs.readDir(in)
	if err != nil {
		return nil, err
	}
	if len(t.dirs) < maxDirCache {
		t.dirs[in.ino] = d
	}
	return d, nil
}

// lookup finds the inode of an absolute path; the last component's symlink
// is followed when follow is set.
func (t *tree) lookup(path string, follow bool) (*inode, error) {
	root, err := t.fs.inode(t.fs.rootIno())
	if err != nil {
		return nil, err
	}
	if !root.isDir() {
		return nil, fmt.Errorf("root inode %d is not a directory", root.ino)
	}
	stack := []*inode{root}
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
		if !dir.isDir() {
			return nil, fmt.Errorf("%s: %w (a component is not a directory)", path, errNotFound)
		}
		entries, err := t.list(dir)
		if err != nil {
			return nil, err
		}
		var ino uint64
		for _, e := range entries {
			if e.name == name {
				ino = e.ino
				break
			}
		}
		if ino == 0 {
			return nil, fmt.Errorf("%s: %w", path, errNotFound)
		}
		in, err := t.fs.inode(ino)
		if err != nil {
			return nil, err
		}
		if in.isSymlink() && (len(rest) > 0 || follow) {
			links++
			if links > maxSymlinks {
				return nil, fmt.Errorf("%s: too many levels of symbolic links", path)
			}
			target, err := t.readlink(in)
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

func (t *tree) readlink(in *inode) (string, error) {
	if in.size <= 0 || in.size > maxSymlinkLen {
		return "", fmt.Errorf("symlink inode %d has the invalid length %d", in.ino, in.size)
	}
	b := make([]byte, in.size)
	n, err := t.fs.readAt(in, b, 0)
	if n < len(b) {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return "", fmt.Errorf("symlink inode %d: %w", in.ino, err)
	}
	return string(b), nil
}

// readFile reads a regular file (following symlinks), at most max bytes.
func (t *tree) readFile(path string, max int64) ([]byte, error) {
	in, err := t.lookup(path, true)
	if err != nil {
		return nil, err
	}
	if !in.isRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	n := min(in.size, max)
	b := make([]byte, n)
	got, err := t.fs.readAt(in, b, 0)
	if got < len(b) {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return b, nil
}

// exists reports whether path names anything (a dangling symlink counts).
func (t *tree) exists(path string) bool {
	_, err := t.lookup(path, false)
	return err == nil
}

// readDir lists a directory by path, without "." and "..".
func (t *tree) readDir(path string) ([]dirEntry, error) {
	in, err := t.lookup(path, true)
	if err != nil {
		return nil, err
	}
	if !in.isDir() {
		return nil, fmt.Errorf("%s is not a directory", path)
	}
	d, err := t.list(in)
	if err != nil {
		return nil, err
	}
	out := make([]dirEntry, 0, len(d))
	for _, e := range d {
		if e.name != "." && e.name != ".." {
			out = append(out, e)
		}
	}
	return out, nil
}
