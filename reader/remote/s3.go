package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	smithy "github.com/aws/smithy-go"
)

// s3Object is an object in an S3-compatible store.
type s3Object struct {
	api         S3API
	bucket, key string
	shown       string
	idle        time.Duration
	id          Identity
}

func (o *s3Object) identity() Identity { return o.id }
func (o *s3Object) display() string    { return o.shown }

// once is the per-call option that leaves retries to this package: the
// SDK's own retryer (12 attempts for uploads) would retry each of ours.
func once(o *s3.Options) { o.RetryMaxAttempts = 1 }

// openS3 learns the object's size and ETag with HeadObject, retried like
// a range.
func (op *Opener) openS3(raw string) (*s3Object, error) {
	rest := raw[len("s3://"):]
	bucket, key, _ := strings.Cut(rest, "/")
	if bucket == "" || key == "" || strings.HasSuffix(key, "/") {
		return nil, fmt.Errorf("%s: give s3://BUCKET/KEY, the key of an object", raw)
	}
	op.s3once.Do(func() {
		if op.o.S3 == nil {
			op.s3err = errors.New("s3:// sources cannot be read here")
			return
		}
		api, err := op.o.S3(op.ctx)
		op.mu.Lock() // Close reads it
		op.s3, op.s3err = api, err
		op.mu.Unlock()
	})
	if op.s3err != nil {
		return nil, fmt.Errorf("%s: %w", raw, op.s3err)
	}
	o := &s3Object{api: op.s3, bucket: bucket, key: key, shown: "s3://" + bucket + "/" + key, idle: op.o.IdleTimeout}
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
	h, err := o.api.HeadObject(rctx, &s3.HeadObjectInput{Bucket: aws.String(o.bucket), Key: aws.String(o.key)}, once)
	if err != nil {
		return o.fail("HeadObject", err)
	}
	o.id.Size = aws.ToInt64(h.ContentLength)
	o.id.ETag = aws.ToString(h.ETag)
	if h.LastModified != nil {
		o.id.LastModified = h.LastModified.UTC()
	}
	if o.id.Size < 0 {
		return &Error{URL: o.shown, What: "HeadObject", Err: fmt.Errorf("negative size %d", o.id.Size)}
	}
	return nil
}

// fetch fills dst from off with one ranged GetObject, pinned to the ETag.
func (o *s3Object) fetch(ctx context.Context, dst [][]byte, off int64, c *counters) error {
	n := total(dst)
	rng := fmt.Sprintf("bytes=%d-%d", off, off+n-1)
	what := "GetObject " + rng
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	in := &s3.GetObjectInput{Bucket: aws.String(o.bucket), Key: aws.String(o.key), Range: aws.String(rng)}
	if o.id.ETag != "" {
		in.IfMatch = aws.String(o.id.ETag)
	}
	t := time.AfterFunc(o.idle, cancel)
	defer t.Stop()
	out, err := o.api.GetObject(rctx, in, once)
	if err != nil {
		return o.fail(what, err)
	}
	defer drain(out.Body)
	if et := aws.ToString(out.ETag); et != "" && o.id.ETag != "" && et != o.id.ETag {
		return &Error{URL: o.shown, What: what, Err: fmt.Errorf("%w: its ETag was %s, now %s", ErrChanged, o.id.ETag, et)}
	}
	if cr := aws.ToString(out.ContentRange); cr != "" {
		start, end, total, err := parseContentRange(cr)
		switch {
		case err != nil:
			return &Error{URL: o.shown, What: what, Err: err}
		case total >= 0 && total != o.id.Size:
			return &Error{URL: o.shown, What: what, Err: fmt.Errorf("%w: it is %d bytes long now, %d before", ErrChanged, total, o.id.Size)}
		case start != off || end != off+n-1:
			return &Error{URL: o.shown, What: what, Err: fmt.Errorf("the store answered with Content-Range %q", cr)}
		}
	} else if aws.ToInt64(out.ContentLength) != n {
		return &Error{URL: o.shown, What: what, Err: fmt.Errorf("%w: the store answered without Content-Range", ErrNoRanges)}
	}
	h := &httpObject{idle: o.idle}
	t.Stop()
	if err := h.body(out.Body, dst, c, cancel); err != nil {
		return transient{&Error{URL: o.shown, What: what, Err: err}}
	}
	return nil
}

// fail classifies an SDK error: no answer, a 5xx, 408 or 429 is
// transient; 412 means the object changed; other statuses are final.
func (o *s3Object) fail(what string, err error) error {
	e := &Error{URL: o.shown, What: what, Err: err}
	var re *awshttp.ResponseError
	if !errors.As(err, &re) || re.Response == nil {
		return transient{e}
	}
	e.Status = re.Response.StatusCode
	e.Err = refusal(short(err))
	switch s := e.Status; {
	case s == http.StatusPreconditionFailed:
		e.Err = fmt.Errorf("%w: its ETag is no longer %s", ErrChanged, o.id.ETag)
	case s == http.StatusRequestedRangeNotSatisfiable:
		e.Err = fmt.Errorf("%w: it is shorter than the %d bytes it had", ErrChanged, o.id.Size)
	case s >= 500, s == http.StatusRequestTimeout, s == http.StatusTooManyRequests:
		return transient{e}
	case s == http.StatusNotFound:
		e.Err = refusal("no such object (or bucket)")
	case s == http.StatusForbidden, s == http.StatusUnauthorized:
		e.Err = refusal("access denied: check the credentials (AWS_* variables, --source-profile) and the bucket policy")
	case s == http.StatusMovedPermanently, s == http.StatusBadRequest && apiCode(err) == "AuthorizationHeaderMalformed":
		e.Err = refusal("the bucket is in another region: give --source-region")
	}
	return e
}

func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// short is an SDK error in one line: its code and message.
func short(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		if m := ae.ErrorMessage(); m != "" {
			return ae.ErrorCode() + ": " + m
		}
		return ae.ErrorCode()
	}
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

var _ io.Closer = (*File)(nil)
