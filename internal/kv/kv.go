// Package kv is the one small interface through which state that must
// outlive a process is kept: a batch's bookkeeping of finished disks, and
// (under a queue) what workers share. Dir keeps it in files; a queue keeps
// it in a JetStream key-value bucket.
//
// Every value has a revision, which grows with every write to the store (a
// deleted key's revision is not used again), so that a write can be made
// on condition: compare-and-set on the key itself, or on another key, the
// lease a writer holds. Fenced makes every write of a store so: a worker
// that lost its lease writes nothing shared (kvtest checks both stores).
package kv

import (
	"context"
	"errors"
	"fmt"
	"regexp"
)

// Store maps keys to values. Keys are made of letters, digits and the
// characters - _ = . (no slashes: one namespace per store). A Store is safe
// for concurrent use, by many processes too.
type Store interface {
	// Get returns the value of key, or an error wrapping ErrNotFound.
	Get(ctx context.Context, key string) ([]byte, error)
	// Put sets the value of key.
	Put(ctx context.Context, key string, value []byte) error
	// Delete removes key; deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error

	// Entry returns the value of key and its revision, or an error
	// wrapping ErrNotFound.
	Entry(ctx context.Context, key string) ([]byte, uint64, error)
	// Swap sets the value of key if c holds, and returns its new
	// revision; an error wrapping ErrConflict when c does not hold.
	Swap(ctx context.Context, key string, value []byte, c Cond) (uint64, error)
	// Remove deletes key if c holds; an error wrapping ErrConflict when
	// it does not.
	Remove(ctx context.Context, key string, c Cond) error
}

// Cond is the condition of a write: key Key is at revision Rev. Key ""
// is the key written; Rev 0 means the key has no value (never had one,
// for a key other than the one written).
type Cond struct {
	Key string
	Rev uint64
}

// Errors of a Store.
var (
	// ErrNotFound is wrapped by Get and Entry for a key that has no value.
	ErrNotFound = errors.New("kv: key not found")
	// ErrConflict is wrapped by a conditional write whose condition did
	// not hold: the key changed since it was read.
	ErrConflict = errors.New("kv: the key changed since it was read")
	// ErrFenced is wrapped by a write of a Fenced store whose guard is
	// lost: another holder has the lease now.
	ErrFenced = errors.New("kv: the lease this write was made under is lost")
)

var validKey = regexp.MustCompile(`^[A-Za-z0-9_=.-]{1,200}$`)

// CheckKey refuses a key a Store does not take.
func CheckKey(key string) error {
	if !validKey.MatchString(key) || key[0] == '.' {
		return fmt.Errorf("kv: bad key %q: use 1..200 letters, digits, - _ = . and no leading dot", key)
	}
	return nil
}

// Guard is what the writes of a Fenced store are made under: a key of
// the store, at the revision its holder last wrote (a lease, renewed by
// its holder).
type Guard interface {
	// Hold calls write with the guard's key and revision, holding off
	// the holder's own updates of the guard meanwhile. It returns
	// ErrFenced, without calling write, once the holder knows the guard
	// is lost.
	Hold(write func(key string, rev uint64) error) error
}

// Fenced is a view of s whose every write is made on condition that the
// guard's key is still at the guard's revision: once another holder took
// the guard over (or the holder let it go), every write fails with
// ErrFenced and changes nothing. Reads pass through. A write with a
// condition of its own is refused: the store checks one condition.
func Fenced(s Store, g Guard) Store { return fenced{s, g} }

type fenced struct {
	Store
	g Guard
}

func (f fenced) write(do func(c Cond) error) error {
	return f.g.Hold(func(key string, rev uint64) error {
		err := do(Cond{Key: key, Rev: rev})
		if errors.Is(err, ErrConflict) {
			return fmt.Errorf("%w (%v)", ErrFenced, err)
		}
		return err
	})
}

func (f fenced) Put(ctx context.Context, key string, value []byte) error {
	return f.write(func(c Cond) error { _, err := f.Store.Swap(ctx, key, value, c); return err })
}

func (f fenced) Delete(ctx context.Context, key string) error {
	return f.write(func(c Cond) error { return f.Store.Remove(ctx, key, c) })
}

var errCondition = errors.New("kv: a fenced store takes no condition of its own")

func (f fenced) Swap(ctx context.Context, key string, value []byte, c Cond) (uint64, error) {
	return 0, errCondition
}

func (f fenced) Remove(ctx context.Context, key string, c Cond) error { return errCondition }
