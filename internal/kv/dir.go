package kv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// Dir is a Store in a folder: one file per key, replaced atomically. Its
// writes take a lock on the folder (DIR/.lock), so that processes sharing
// the folder see one order of revisions; the last revision given is kept
// in DIR/.rev.
type Dir string

var _ Store = Dir("")

// dirMagic begins every file Dir writes: "kv1 REV\n", then the value. A
// file without it (written before revisions) is at revision 1.
const dirMagic = "kv1 "

func (d Dir) path(key string) (string, error) {
	if err := CheckKey(key); err != nil {
		return "", err
	}
	return filepath.Join(string(d), key+".json"), nil
}

// read reads the file of key: its value and revision.
func (d Dir) read(key string) ([]byte, uint64, error) {
	p, err := d.path(key)
	if err != nil {
		return nil, 0, err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0, fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	if err != nil {
		return nil, 0, err
	}
	rest, ok := bytes.CutPrefix(b, []byte(dirMagic))
	if !ok {
		return b, 1, nil
	}
	line, value, ok := bytes.Cut(rest, []byte("\n"))
	rev, err := strconv.ParseUint(string(line), 10, 64)
	if !ok || err != nil {
		return nil, 0, fmt.Errorf("kv: %s: not a value of this store (its first line is %q)", p, line)
	}
	return value, rev, nil
}

// Get reads the file of key.
func (d Dir) Get(_ context.Context, key string) ([]byte, error) {
	b, _, err := d.read(key)
	return b, err
}

// Entry reads the file of key and its revision.
func (d Dir) Entry(_ context.Context, key string) ([]byte, uint64, error) { return d.read(key) }

// Put writes the file of key under a temporary name, syncs it and renames
// it into place, so a crash leaves the old value or the new, never half.
func (d Dir) Put(ctx context.Context, key string, value []byte) error {
	_, err := d.write(key, value, false, nil)
	return err
}

// Delete removes the file of key.
func (d Dir) Delete(ctx context.Context, key string) error {
	_, err := d.write(key, nil, true, nil)
	return err
}

// Swap writes the file of key if c holds.
func (d Dir) Swap(_ context.Context, key string, value []byte, c Cond) (uint64, error) {
	return d.write(key, value, false, &c)
}

// Remove removes the file of key if c holds.
func (d Dir) Remove(_ context.Context, key string, c Cond) error {
	_, err := d.write(key, nil, true, &c)
	return err
}

// write puts or deletes key under the folder's lock, once c (if any)
// holds, and returns the key's new revision.
func (d Dir) write(key string, value []byte, del bool, c *Cond) (uint64, error) {
	p, err := d.path(key)
	if err != nil {
		return 0, err
	}
	if c != nil && c.Key != "" {
		if err := CheckKey(c.Key); err != nil {
			return 0, err
		}
	}
	if err := os.MkdirAll(string(d), 0o700); err != nil {
		return 0, err
	}
	unlock, err := lockDir(filepath.Join(string(d), ".lock"))
	if err != nil {
		return 0, fmt.Errorf("kv: locking %s: %w", d, err)
	}
	defer unlock()
	if c != nil {
		if err := d.holds(key, *c); err != nil {
			return 0, err
		}
	}
	rev, err := d.nextRev()
	if err != nil {
		return 0, err
	}
	if del {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return 0, err
		}
		return rev, nil
	}
	b := append([]byte(dirMagic+strconv.FormatUint(rev, 10)+"\n"), value...)
	if err := writeFile(string(d), "."+key+".*", p, b); err != nil {
		return 0, fmt.Errorf("kv: writing %s: %w", p, err)
	}
	return rev, nil
}

// holds checks c, under the lock.
func (d Dir) holds(key string, c Cond) error {
	k := c.Key
	if k == "" {
		k = key
	}
	_, rev, err := d.read(k)
	if errors.Is(err, ErrNotFound) {
		rev, err = 0, nil
	}
	if err != nil {
		return err
	}
	if rev != c.Rev {
		return fmt.Errorf("%w: %s is at revision %d, not %d", ErrConflict, k, rev, c.Rev)
	}
	return nil
}

// nextRev takes the next revision of the store, under the lock: the one
// after the largest given (kept in .rev before the value is written, so a
// crash between the two never gives one revision twice).
func (d Dir) nextRev() (uint64, error) {
	p := filepath.Join(string(d), ".rev")
	var last uint64
	b, err := os.ReadFile(p)
	switch {
	case err == nil:
		if last, err = strconv.ParseUint(string(bytes.TrimSpace(b)), 10, 64); err != nil {
			return 0, fmt.Errorf("kv: %s: %q is not a revision", p, b)
		}
	case !errors.Is(err, os.ErrNotExist):
		return 0, err
	}
	// A file written before revisions is at 1: the first one given is 2.
	next := max(last, 1) + 1
	if err := writeFile(string(d), ".rev.*", p, []byte(strconv.FormatUint(next, 10)+"\n")); err != nil {
		return 0, fmt.Errorf("kv: writing %s: %w", p, err)
	}
	return next, nil
}

// writeFile writes b to path through a temporary file in dir, synced and
// renamed into place.
func writeFile(dir, pattern, path string, b []byte) error {
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}
