package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"vmimport/internal/objstore"
	"vmimport/internal/safetext"
)

// s3Object is an object in an S3-compatible store.
type s3Object struct {
	api         objstore.Store // its bucket
	bucket, key string
	shown       string
	idle        time.Duration
	pace        pace
	id          Identity
}

func (o *s3Object) identity() Identity { return o.id }
func (o *s3Object) display() string    { return o.shown }

// openS3 learns the object's size and ETag with HeadObject, retried like
// a range.
func (op *Opener) openS3(raw string) (*s3Object, error) {
	rest := raw[len("s3://"):]
	bucket, key, _ := strings.Cut(rest, "/")
	if bucket == "" || key == "" || strings.HasSuffix(key, "/") {
		return nil, fmt.Errorf("%s: give s3://BUCKET/KEY, the key of an object", raw)
	}
	if op.o.S3 == nil {
		return nil, fmt.Errorf("%s: s3:// sources cannot be read here", raw)
	}
	api, err := op.o.S3(op.ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", raw, err)
	}
	o := &s3Object{api: api, bucket: bucket, key: key, shown: "s3://" + bucket + "/" + key, idle: op.o.IdleTimeout, pace: op.pace()}
	o.id.URL = o.shown
	backoff := op.o.MinBackoff
	for attempt := 1; ; attempt++ {
		op.c.requests.Add(1)
		err := o.head(op.ctx)
		if err == nil {
			return o, nil
		}
		if cerr := op.ctx.Err(); cerr != nil {
			return nil, cerr
		}
		if !isTransient(err) || attempt > op.o.Retries {
			var e *Error
			if errors.As(err, &e) {
				e.Attempts = attempt
			}
			return nil, unwrapTransient(err)
		}
		op.c.retries.Add(1)
		if err := sleep(op.ctx, jitter(backoff)); err != nil {
			return nil, err
		}
		backoff = min(2*backoff, op.o.MaxBackoff)
	}
}

func (o *s3Object) head(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, o.idle)
	defer cancel()
	h, err := o.api.Head(rctx, o.key)
	if err != nil {
		return o.fail("HeadObject", err)
	}
	// Quoted, as an http(s) source's ETag: identities recorded before
	// stay the same.
	o.id.Size, o.id.ETag = h.Size, objstore.Quote(h.ETag)
	if !h.Modified.IsZero() {
		o.id.LastModified = h.Modified.UTC()
	}
	if o.id.Size < 0 {
		return &Error{URL: o.shown, What: "HeadObject", Err: fmt.Errorf("negative size %d", o.id.Size)}
	}
	return nil
}

// fetch fills dst from off with one ranged GetObject, pinned to the ETag.
func (o *s3Object) fetch(ctx context.Context, dst [][]byte, off int64, c *counters) error {
	n := total(dst)
	what := fmt.Sprintf("GetObject bytes=%d-%d", off, off+n-1)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	t := time.AfterFunc(o.idle, cancel)
	defer t.Stop()
	body, r, err := o.api.Get(rctx, o.key, off, n, o.id.ETag)
	if err != nil {
		return o.fail(what, err)
	}
	defer drain(body)
	if r.ETag != "" && o.id.ETag != "" && objstore.Quote(r.ETag) != o.id.ETag {
		return &Error{URL: o.shown, What: what, Err: fmt.Errorf("%w: its ETag was %s, now %s", ErrChanged, safetext.Escape(o.id.ETag), safetext.Escape(objstore.Quote(r.ETag)))}
	}
	switch {
	case r.Total >= 0 && r.Total != o.id.Size:
		return &Error{URL: o.shown, What: what, Err: fmt.Errorf("%w: it is %d bytes long now, %d before", ErrChanged, r.Total, o.id.Size)}
	case r.Total < 0 && r.End-r.Start+1 != n:
		return &Error{URL: o.shown, What: what, Err: fmt.Errorf("%w: the store answered without Content-Range", ErrNoRanges)}
	case r.Start != off || r.End != off+n-1:
		return &Error{URL: o.shown, What: what, Err: fmt.Errorf("the store answered with bytes %d-%d", r.Start, r.End)}
	}
	h := &httpObject{idle: o.idle, pace: o.pace}
	t.Stop()
	if err := h.body(body, dst, c, cancel); err != nil {
		return transient{&Error{URL: o.shown, What: what, Err: err}}
	}
	return nil
}

// fail classifies a store's error: no answer, a 5xx, 408 or 429 is
// transient; 412 means the object changed; other statuses are final.
func (o *s3Object) fail(what string, err error) error {
	e := &Error{URL: o.shown, What: what, Err: err}
	s := objstore.Status(err)
	if s == 0 {
		return transient{e}
	}
	e.Status = s
	e.Err = refusal(short(err))
	switch {
	case s == http.StatusPreconditionFailed:
		e.Err = fmt.Errorf("%w: its ETag is no longer %s", ErrChanged, safetext.Escape(o.id.ETag))
	case s == http.StatusRequestedRangeNotSatisfiable:
		e.Err = fmt.Errorf("%w: it is shorter than the %d bytes it had", ErrChanged, o.id.Size)
	case objstore.Retryable(err):
		return transient{e}
	case s == http.StatusNotFound:
		e.Err = refusal("no such object (or bucket)")
	case s == http.StatusForbidden, s == http.StatusUnauthorized:
		e.Err = refusal("access denied: check the credentials (AWS_* variables, --source-profile) and the bucket policy")
	case s == http.StatusMovedPermanently, s == http.StatusBadRequest && objstore.Code(err) == "AuthorizationHeaderMalformed":
		e.Err = refusal("the bucket is in another region: give --source-region")
	}
	return e
}

// short is a store's error in one line: its code and message.
func short(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return safetext.Escape(s)
}

var _ io.Closer = (*File)(nil)
