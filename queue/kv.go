package queue

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"vmimport/internal/kv"
)

// Bucket is the queue's JetStream key-value bucket as a kv.Store: the
// batch bookkeeping and the upload resume state of the disks the workers
// run live there, where every node sees them.
type Bucket struct {
	kv jetstream.KeyValue
}

var _ kv.Store = (*Bucket)(nil)

// Get returns the value of key; a missing or deleted key wraps
// kv.ErrNotFound.
func (b *Bucket) Get(ctx context.Context, key string) ([]byte, error) {
	if err := kv.CheckKey(key); err != nil {
		return nil, err
	}
	ctx, cancel := opCtx(ctx)
	defer cancel()
	e, err := b.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil, fmt.Errorf("%w: %s", kv.ErrNotFound, key)
	}
	if err != nil {
		return nil, fmt.Errorf("KV bucket %s: getting %s: %w", b.kv.Bucket(), key, err)
	}
	return e.Value(), nil
}

// Put sets the value of key (stored by the server before it answers).
func (b *Bucket) Put(ctx context.Context, key string, value []byte) error {
	if err := kv.CheckKey(key); err != nil {
		return err
	}
	ctx, cancel := opCtx(ctx)
	defer cancel()
	if _, err := b.kv.Put(ctx, key, value); err != nil {
		return fmt.Errorf("KV bucket %s: putting %s: %w", b.kv.Bucket(), key, err)
	}
	return nil
}

// Delete removes key; a missing key is not an error.
func (b *Bucket) Delete(ctx context.Context, key string) error {
	if err := kv.CheckKey(key); err != nil {
		return err
	}
	ctx, cancel := opCtx(ctx)
	defer cancel()
	if err := b.kv.Delete(ctx, key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("KV bucket %s: deleting %s: %w", b.kv.Bucket(), key, err)
	}
	return nil
}
