package upload

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"

	"vmimport/internal/kv"
)

// StateStore keeps the resume state of one upload: the state file by
// default, a key of a kv.Store (a JetStream bucket, under a queue) so that
// another node can resume an upload a dead one began.
type StateStore interface {
	// Load returns the recorded state, or an error wrapping
	// os.ErrNotExist when there is none.
	Load(ctx context.Context) ([]byte, error)
	// Save records the state, atomically.
	Save(ctx context.Context, b []byte) error
	// Remove forgets the state; removing none is not an error.
	Remove(ctx context.Context) error
	// Name says where the state is, for messages ("/home/u/.cache/...json").
	Name() string
}

// FileState is a StateStore in one file, replaced atomically.
type FileState string

var _ StateStore = FileState("")

// Load reads the file.
func (f FileState) Load(context.Context) ([]byte, error) { return os.ReadFile(string(f)) }

// Save writes the file under a temporary name, syncs and renames it.
func (f FileState) Save(_ context.Context, b []byte) error { return writeAtomic(string(f), b) }

// Remove removes the file.
func (f FileState) Remove(context.Context) error { return removeState(string(f)) }

// Name is the file's path.
func (f FileState) Name() string { return string(f) }

// KVState is a StateStore under one key of a kv.Store.
type KVState struct {
	Store kv.Store
	Key   string
	// Where names the store in messages ("KV bucket convert-state").
	Where string
}

var _ StateStore = KVState{}

// Load gets the key; a missing key is os.ErrNotExist.
func (k KVState) Load(ctx context.Context) ([]byte, error) {
	b, err := k.Store.Get(ctx, k.Key)
	if errors.Is(err, kv.ErrNotFound) {
		return nil, fmt.Errorf("%w: %s", os.ErrNotExist, k.Name())
	}
	return b, err
}

// Save puts the key.
func (k KVState) Save(ctx context.Context, b []byte) error { return k.Store.Put(ctx, k.Key, b) }

// Remove deletes the key.
func (k KVState) Remove(ctx context.Context) error { return k.Store.Delete(ctx, k.Key) }

// Name is the store and the key.
func (k KVState) Name() string { return fmt.Sprintf("%s key %s", k.Where, k.Key) }

// StateKey is the key of the state of an upload to bucket/key through c
// in a kv.Store: the same digest that names the default state file.
func StateKey(c *Client, bucket, key string) string {
	sum := sha256.Sum256([]byte(endpointName(c) + "\x00" + bucket + "\x00" + key))
	return "upload-" + hex.EncodeToString(sum[:12])
}
