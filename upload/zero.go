package upload

import (
	"context"
	"crypto/md5"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"vmimport/internal/objstore"
)

// zeroObject is the object whole parts of zeros are copied from
// server-side (KEY.convert-zeros-ID, one part long), so that zeros never
// cross the network. It is built on first use, once, and deleted when the
// upload ends; a store that refuses UploadPartCopy is noticed once, and
// zero parts are then sent as bytes.
type zeroObject struct {
	s       objstore.Store
	bucket  string
	key     string // the upload's object
	zeroKey string
	size    int64 // one part
	log     func(string)
	sent    *atomic.Int64 // the seed's bytes count as sent
	fence   func(context.Context) error

	mu      sync.Mutex
	tried   bool // building began: it may exist
	ready   bool
	err     error
	refused atomic.Bool  // said: zero parts go as bytes
	why     atomic.Value // string: the store's answer to a copy

	smu  sync.Mutex
	sums map[int64][16]byte
}

func (t *Target) newZero() *zeroObject {
	return &zeroObject{
		s: t.s, bucket: t.bucket, key: t.key, zeroKey: t.st.ZeroKey, size: t.g.size, log: t.log,
		sent: &t.parts.sent, sums: map[int64][16]byte{}, fence: t.fence,
	}
}

// sum is the MD5 of n zero bytes, computed once per length.
func (z *zeroObject) sum(n int64) [16]byte {
	z.smu.Lock()
	s, ok := z.sums[n]
	z.smu.Unlock()
	if ok {
		return s
	}
	h := md5.New()
	io.Copy(h, &zeroReader{n: n})
	copy(s[:], h.Sum(nil))
	z.smu.Lock()
	z.sums[n] = s
	z.smu.Unlock()
	return s
}

// refusal tells whether an error of UploadPartCopy means the store does
// not do it (rather than a failure worth reporting).
func refusal(err error) bool {
	switch httpStatus(err) {
	case http.StatusNotImplemented, http.StatusMethodNotAllowed, http.StatusForbidden, http.StatusBadRequest:
		return true
	}
	switch apiCode(err) {
	case "NotImplemented", "NotSupported", "MethodNotAllowed":
		return true
	}
	return false
}

// refuse notes why the store refuses copies; say tells it, once, outside
// any lock.
func (z *zeroObject) refuse(err error) error {
	z.why.CompareAndSwap(nil, short(err))
	return errCopyRefused
}

// say tells, once, that zero parts go as bytes.
func (z *zeroObject) say() {
	if !z.refused.Swap(true) {
		why, _ := z.why.Load().(string)
		z.log(fmt.Sprintf("the store refuses server-side copies (%s): sending zero parts as bytes", why))
	}
}

// copyInto makes part num of the upload a copy of the first n bytes of the
// zero object; want is the MD5 of n zeros, hex.
func (z *zeroObject) copyInto(ctx context.Context, uploadID string, num int32, n int64, want string) error {
	if err := z.ensure(ctx); err != nil {
		if errors.Is(err, errCopyRefused) {
			z.say()
		}
		return err
	}
	got, err := z.s.CopyPart(ctx, z.key, uploadID, num, z.zeroKey, n)
	if err != nil {
		if refusal(err) {
			z.refuse(err)
			z.say()
			return errCopyRefused
		}
		return fail("copying zeros into", z.key, num, err)
	}
	if got != "" && got != want {
		return fail("copying zeros into", z.key, num, fmt.Errorf("the store answered ETag %q, the MD5 of %d zeros is %s", got, n, want))
	}
	return nil
}

// ensure builds the zero object once: zeroSeed bytes of zeros cross the
// network, the rest of a part's worth is copied from them server-side.
func (z *zeroObject) ensure(ctx context.Context) error {
	z.mu.Lock()
	defer z.mu.Unlock()
	if z.ready {
		return nil
	}
	if z.err != nil {
		return z.err
	}
	if err := ctx.Err(); err != nil {
		return context.Cause(ctx)
	}
	if err := z.fence(ctx); err != nil {
		return fail("building the zero object", z.zeroKey, 0, err)
	}
	z.tried = true
	// The build is not cut short by an abort: a request cancelled on our
	// side may still land on the server after the abort deleted the zero
	// object. It is short (one seed, a few copies), so it is let finish.
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	err := z.build(bctx)
	switch {
	case err == nil:
		z.ready = true
	case errors.Is(err, errCopyRefused):
		z.err = err
	}
	return err
}

func (z *zeroObject) build(ctx context.Context) error {
	size := z.size
	if h, err := z.s.Head(ctx, z.zeroKey); err == nil && h.Size == size {
		return nil // left by the run being resumed
	}
	seed := min(size, zeroSeed)
	seedKey := z.zeroKey
	if seed < size {
		seedKey += ".seed"
	}
	if err := z.s.Put(ctx, seedKey, &zeroReader{n: seed}, seed, z.sum(seed)); err != nil {
		return fail("writing the zero object "+seedKey, seedKey, 0, err)
	}
	z.sent.Add(seed)
	if seed == size {
		return nil
	}
	defer z.s.Delete(context.WithoutCancel(ctx), seedKey)
	const op = "building the zero object"
	id, err := z.s.CreateUpload(ctx, z.zeroKey, nil)
	if err != nil {
		return fail(op, z.zeroKey, 0, err)
	}
	abort := func() { z.s.AbortUpload(context.WithoutCancel(ctx), z.zeroKey, id) }
	var etags []string
	for off, num := int64(0), int32(1); off < size; off, num = off+seed, num+1 {
		etag, err := z.s.CopyPart(ctx, z.zeroKey, id, num, seedKey, min(seed, size-off))
		if err != nil {
			abort()
			if refusal(err) {
				return z.refuse(err)
			}
			return fail(op, z.zeroKey, 0, err)
		}
		etags = append(etags, etag)
	}
	if _, err := z.s.Complete(ctx, z.zeroKey, id, etags); err != nil {
		abort()
		return fail(op, z.zeroKey, 0, err)
	}
	return nil
}

// drop deletes the zero object, if it was made or begun (or may have been,
// by the run resumed), and checks it is gone: a build cut short by an abort
// may still land on the server after the request was cancelled, so the
// delete is tried again, a few times, until a HEAD finds nothing.
func (z *zeroObject) drop(ctx context.Context, resumed bool) {
	z.mu.Lock()
	tried, ready := z.tried, z.ready
	z.mu.Unlock()
	if !tried && !resumed {
		return
	}
	keys := []string{z.zeroKey}
	if !ready {
		keys = append(keys, z.zeroKey+".seed")
	}
	for _, key := range keys {
		var err error
		for attempt := range 5 {
			if attempt > 0 {
				select {
				case <-time.After(time.Duration(attempt) * 200 * time.Millisecond):
				case <-ctx.Done():
				}
			}
			if err = z.s.Delete(ctx, key); err != nil && httpStatus(err) != http.StatusNotFound {
				continue
			}
			_, err = z.s.Head(ctx, key)
			if httpStatus(err) == http.StatusNotFound {
				err = nil
				break
			}
			if err == nil {
				err = errors.New("still there after the delete")
			}
		}
		if err != nil {
			z.log(fmt.Sprintf("could not delete the zero object s3://%s/%s (%s): delete it by hand", z.bucket, key, short(err)))
		}
	}
}

// dropKeys deletes leftover zero objects without checking (finish.go).
func dropKeys(ctx context.Context, s objstore.Store, bucket string, log func(string), keys ...string) {
	for _, key := range keys {
		if err := s.Delete(ctx, key); err != nil && httpStatus(err) != http.StatusNotFound {
			log(fmt.Sprintf("could not delete the zero object s3://%s/%s (%s): delete it by hand", bucket, key, short(err)))
		}
	}
}

// zeroReader reads n zero bytes and can seek, so that a request can be
// signed and sent again.
type zeroReader struct{ n, off int64 }

func (z *zeroReader) Read(p []byte) (int, error) {
	if z.off >= z.n {
		return 0, io.EOF
	}
	k := min(int64(len(p)), z.n-z.off)
	clear(p[:k])
	z.off += k
	return int(k), nil
}

func (z *zeroReader) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		off += z.off
	case io.SeekEnd:
		off += z.n
	default:
		return 0, errors.New("zeroReader: bad whence")
	}
	if off < 0 {
		return 0, errors.New("zeroReader: negative position")
	}
	z.off = off
	return off, nil
}
