package upload

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// retrying is an objectStore that tries every call of the one it wraps
// again on a transient failure (a dropped connection, a 5xx, throttling),
// as the retryer says: the SDK's standard one, set up in NewClient with
// many attempts, a long backoff and no retry quota for hours-long uploads.
// The SDK client under it tries each request once, so this is the one
// place where requests are repeated. Bodies are rewound before each try.
type retrying struct {
	store objectStore
	r     aws.Retryer
}

var _ objectStore = retrying{}

// do runs call until it succeeds, fails for good, runs out of attempts or
// ctx ends; it returns the last error, which says how many attempts were
// made when there were several.
func (s retrying) do(ctx context.Context, call func() error) error {
	for attempt := 1; ; attempt++ {
		err := call()
		if err == nil || !s.r.IsErrorRetryable(err) || ctx.Err() != nil {
			return err
		}
		if attempt >= s.r.MaxAttempts() {
			if attempt > 1 {
				err = fmt.Errorf("%w (%d attempts)", err, attempt)
			}
			return err
		}
		d, derr := s.r.RetryDelay(attempt, err)
		if derr != nil {
			return err
		}
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return err
		}
	}
}

// rewound runs call with body at its start.
func rewound(body io.ReadSeeker, call func() error) func() error {
	return func() error {
		if _, err := body.Seek(0, io.SeekStart); err != nil {
			return err
		}
		return call()
	}
}

func (s retrying) CreateUpload(ctx context.Context, key string, meta map[string]string) (id string, err error) {
	err = s.do(ctx, func() (err error) { id, err = s.store.CreateUpload(ctx, key, meta); return })
	return id, err
}

func (s retrying) UploadPart(ctx context.Context, key, uploadID string, num int32, body io.ReadSeeker, size int64, md5 [16]byte) (etag string, err error) {
	err = s.do(ctx, rewound(body, func() (err error) {
		etag, err = s.store.UploadPart(ctx, key, uploadID, num, body, size, md5)
		return
	}))
	return etag, err
}

func (s retrying) CopyPart(ctx context.Context, key, uploadID string, num int32, srcKey string, n int64) (etag string, err error) {
	err = s.do(ctx, func() (err error) { etag, err = s.store.CopyPart(ctx, key, uploadID, num, srcKey, n); return })
	return etag, err
}

func (s retrying) ListParts(ctx context.Context, key, uploadID string) (parts []partMeta, err error) {
	err = s.do(ctx, func() (err error) { parts, err = s.store.ListParts(ctx, key, uploadID); return })
	return parts, err
}

func (s retrying) Complete(ctx context.Context, key, uploadID string, etags []string) (etag string, err error) {
	err = s.do(ctx, func() (err error) { etag, err = s.store.Complete(ctx, key, uploadID, etags); return })
	return etag, err
}

func (s retrying) AbortUpload(ctx context.Context, key, uploadID string) error {
	return s.do(ctx, func() error { return s.store.AbortUpload(ctx, key, uploadID) })
}

func (s retrying) ListUploads(ctx context.Context, prefix string) (ps []Pending, err error) {
	err = s.do(ctx, func() (err error) { ps, err = s.store.ListUploads(ctx, prefix); return })
	return ps, err
}

func (s retrying) Head(ctx context.Context, key string) (m objectMeta, err error) {
	err = s.do(ctx, func() (err error) { m, err = s.store.Head(ctx, key); return })
	return m, err
}

func (s retrying) Put(ctx context.Context, key string, body io.ReadSeeker, size int64, md5 [16]byte) error {
	return s.do(ctx, rewound(body, func() error { return s.store.Put(ctx, key, body, size, md5) }))
}

func (s retrying) Delete(ctx context.Context, key string) error {
	return s.do(ctx, func() error { return s.store.Delete(ctx, key) })
}

func (s retrying) GetRange(ctx context.Context, key string, off, n int64) (rc io.ReadCloser, err error) {
	err = s.do(ctx, func() (err error) { rc, err = s.store.GetRange(ctx, key, off, n); return })
	return rc, err
}
