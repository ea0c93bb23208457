// Package kv is the one small interface through which state that must
// outlive a process is kept: a batch's bookkeeping of finished disks, and
// (under a queue) what workers share. Dir keeps it in files; a queue keeps
// it in a JetStream key-value bucket.
package kv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
)

// Store maps keys to values. Keys are made of letters, digits and the
// characters - _ = . (no slashes: one namespace per store). A Store is safe
// for concurrent use.
type Store interface {
	// Get returns the value of key, or an error wrapping ErrNotFound.
	Get(ctx context.Context, key string) ([]byte, error)
	// Put sets the value of key.
	Put(ctx context.Context, key string, value []byte) error
	// Delete removes key; deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error
}

// ErrNotFound is wrapped by Get for a key that has no value.
var ErrNotFound = errors.New("kv: key not found")

var validKey = regexp.MustCompile(`^[A-Za-z0-9_=.-]{1,200}$`)

// CheckKey refuses a key a Store does not take.
func CheckKey(key string) error {
	if !validKey.MatchString(key) || key[0] == '.' {
		return fmt.Errorf("kv: bad key %q: use 1..200 letters, digits, - _ = . and no leading dot", key)
	}
	return nil
}

// Dir is a Store in a folder: one file per key, replaced atomically.
type Dir string

var _ Store = Dir("")

func (d Dir) path(key string) (string, error) {
	if err := CheckKey(key); err != nil {
		return "", err
	}
	return filepath.Join(string(d), key+".json"), nil
}

// Get reads the file of key.
func (d Dir) Get(_ context.Context, key string) ([]byte, error) {
	p, err := d.path(key)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	return b, err
}

// Put writes the file of key under a temporary name, syncs it and renames
// it into place, so a crash leaves the old value or the new, never half.
func (d Dir) Put(_ context.Context, key string, value []byte) error {
	p, err := d.path(key)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(string(d), 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(string(d), "."+key+".*")
	if err != nil {
		return err
	}
	_, err = f.Write(value)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), p)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("kv: writing %s: %w", p, err)
	}
	return nil
}

// Delete removes the file of key.
func (d Dir) Delete(_ context.Context, key string) error {
	p, err := d.path(key)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
