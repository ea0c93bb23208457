package queue

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"vmimport/internal/kv"
)

// Bucket is the queue's JetStream key-value bucket as a kv.Store: the
// batch bookkeeping and the upload resume state of the disks the workers
// run live there, where every node sees them. A revision is the sequence
// of the write in the bucket's stream; a write on condition that another
// key is at a revision (a lease) is a publish with
// Nats-Expected-Last-Subject-Sequence for that key's subject, checked by
// the server itself.
type Bucket struct {
	kv jetstream.KeyValue
	js jetstream.JetStream
}

var _ kv.Store = (*Bucket)(nil)

// subject is the subject of key in the bucket's stream.
func (b *Bucket) subject(key string) string { return "$KV." + b.kv.Bucket() + "." + key }

// Get returns the value of key; a missing or deleted key wraps
// kv.ErrNotFound.
func (b *Bucket) Get(ctx context.Context, key string) ([]byte, error) {
	v, _, err := b.Entry(ctx, key)
	return v, err
}

// Entry returns the value of key and its revision.
func (b *Bucket) Entry(ctx context.Context, key string) ([]byte, uint64, error) {
	if err := kv.CheckKey(key); err != nil {
		return nil, 0, err
	}
	ctx, cancel := opCtx(ctx)
	defer cancel()
	e, err := b.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil, 0, fmt.Errorf("%w: %s", kv.ErrNotFound, key)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("KV bucket %s: getting %s: %w", b.kv.Bucket(), key, err)
	}
	return e.Value(), e.Revision(), nil
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

// Swap sets key if c holds.
func (b *Bucket) Swap(ctx context.Context, key string, value []byte, c kv.Cond) (uint64, error) {
	if err := checkKeys(key, c); err != nil {
		return 0, err
	}
	ctx, cancel := opCtx(ctx)
	defer cancel()
	var rev uint64
	var err error
	switch {
	case c.Key != "" && c.Key != key:
		var ack *jetstream.PubAck
		if ack, err = b.js.Publish(ctx, b.subject(key), value, jetstream.WithExpectLastSequenceForSubject(c.Rev, b.subject(c.Key))); err == nil {
			rev = ack.Sequence
		}
	case c.Rev == 0:
		rev, err = b.kv.Create(ctx, key, value)
	default:
		rev, err = b.kv.Update(ctx, key, value, c.Rev)
	}
	return rev, b.writeError("putting", key, c, err)
}

// Remove deletes key if c holds.
func (b *Bucket) Remove(ctx context.Context, key string, c kv.Cond) error {
	if err := checkKeys(key, c); err != nil {
		return err
	}
	ctx, cancel := opCtx(ctx)
	defer cancel()
	var err error
	switch {
	case c.Key != "" && c.Key != key:
		m := nats.NewMsg(b.subject(key))
		m.Header.Set("KV-Operation", "DEL") // a delete marker, as KeyValue.Delete writes it
		_, err = b.js.PublishMsg(ctx, m, jetstream.WithExpectLastSequenceForSubject(c.Rev, b.subject(c.Key)))
	case c.Rev == 0:
		if _, _, gerr := b.Entry(ctx, key); !errors.Is(gerr, kv.ErrNotFound) {
			err = fmt.Errorf("%w: %s has a value", kv.ErrConflict, key)
		}
	default:
		err = b.kv.Delete(ctx, key, jetstream.LastRevision(c.Rev))
	}
	return b.writeError("deleting", key, c, err)
}

func checkKeys(key string, c kv.Cond) error {
	if err := kv.CheckKey(key); err != nil {
		return err
	}
	if c.Key != "" {
		return kv.CheckKey(c.Key)
	}
	return nil
}

// writeError words a failed conditional write; a condition that did not
// hold wraps kv.ErrConflict.
func (b *Bucket) writeError(op, key string, c kv.Cond, err error) error {
	if err == nil || errors.Is(err, kv.ErrConflict) {
		return err
	}
	var apiErr *jetstream.APIError
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) ||
		(errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)) {
		k := c.Key
		if k == "" {
			k = key
		}
		return fmt.Errorf("KV bucket %s: %s %s: %w: %s is no longer at revision %d (%w)", b.kv.Bucket(), op, key, kv.ErrConflict, k, c.Rev, err)
	}
	return fmt.Errorf("KV bucket %s: %s %s: %w", b.kv.Bucket(), op, key, err)
}
