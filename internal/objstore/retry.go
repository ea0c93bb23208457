package objstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Policy bounds the retries of one call.
type Policy struct {
	// Attempts is the most tries of one call (default 12).
	Attempts int
	// MinBackoff and MaxBackoff bound the wait of a call before its next
	// attempt, which doubles from one to the next, with jitter (defaults
	// 200ms and 30s).
	MinBackoff, MaxBackoff time.Duration
}

// Defaults of a Policy.
const (
	DefaultAttempts   = 12
	DefaultMinBackoff = 200 * time.Millisecond
	DefaultMaxBackoff = 30 * time.Second
	// DefaultMaxPacing is the most a Pacer spaces calls (rclone's for S3).
	DefaultMaxPacing = 2 * time.Second
	// firstContactAttempts and firstContactBackoff bound the tries of a
	// connection that cannot be made to a store that never answered: a
	// mistyped endpoint or a stopped store is told in about a second.
	firstContactAttempts = 3
	firstContactBackoff  = 500 * time.Millisecond
	// pacingStep is the first spacing of calls once the store pushes back.
	pacingStep = 100 * time.Millisecond
)

func (p Policy) withDefaults() Policy {
	if p.Attempts <= 0 {
		p.Attempts = DefaultAttempts
	}
	if p.MinBackoff <= 0 {
		p.MinBackoff = DefaultMinBackoff
	}
	if p.MaxBackoff <= 0 {
		p.MaxBackoff = DefaultMaxBackoff
	}
	p.MaxBackoff = max(p.MaxBackoff, p.MinBackoff)
	return p
}

// Pacer spaces the calls to one store, for every caller of a process
// together (as rclone's lib/pacer does): while the store answers, calls
// go at once; every failure worth a retry (a 503 SlowDown, a 5xx, a
// dropped connection) doubles the space between the starts of two calls,
// from 100ms up to a most; every success halves it. K senders under a
// storm of 503s then press the store as one. It also remembers whether
// the store ever answered.
type Pacer struct {
	most time.Duration

	mu    sync.Mutex
	last  time.Time // the start of the last call
	space time.Duration

	reached atomic.Bool
	retries atomic.Int64
}

// NewPacer returns a pacer that spaces calls at most most apart (default
// DefaultMaxPacing).
func NewPacer(most time.Duration) *Pacer {
	if most <= 0 {
		most = DefaultMaxPacing
	}
	return &Pacer{most: most}
}

// Pacing is the space between the starts of two calls now.
func (p *Pacer) Pacing() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.space
}

// Retries counts the calls tried again through this pacer.
func (p *Pacer) Retries() int64 { return p.retries.Load() }

// wait waits for the caller's turn: space after the start of the last
// call, as the space is when the turn comes (a success meanwhile brings
// it closer).
func (p *Pacer) wait(ctx context.Context) error {
	for {
		p.mu.Lock()
		now := time.Now()
		next := p.last.Add(p.space)
		if !now.Before(next) {
			p.last = now
			p.mu.Unlock()
			return nil
		}
		p.mu.Unlock()
		t := time.NewTimer(next.Sub(now))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
}

// failed widens the space after a failure worth a retry.
func (p *Pacer) failed() {
	p.mu.Lock()
	p.space = min(max(2*p.space, pacingStep), p.most)
	p.mu.Unlock()
}

// succeeded narrows it after a success.
func (p *Pacer) succeeded() {
	p.mu.Lock()
	if p.space /= 2; p.space < pacingStep/4 {
		p.space = 0
	}
	p.mu.Unlock()
}

// Retry is a call tried again: an event for logs and metrics.
type Retry struct {
	// Op is the call ("UploadPart"), Key its object, Part its part
	// number (0: none).
	Op   string
	Key  string
	Part int32
	// Attempt is the attempt that failed, from 1, of at most Attempts.
	Attempt, Attempts int
	// Err is how it failed (an *Error).
	Err error
	// Delay is the wait before the next attempt; Pacing the space the
	// store's pacer keeps between calls now.
	Delay, Pacing time.Duration
}

// Trace hears what the calls made under a context do (as
// net/http/httptrace does for requests). Any hook may be nil.
type Trace struct {
	// Retry hears every call tried again, from the calling goroutine.
	Retry func(Retry)
}

type traceKey struct{}

// WithTrace returns a context whose store calls report to t.
func WithTrace(ctx context.Context, t *Trace) context.Context {
	return context.WithValue(ctx, traceKey{}, t)
}

func traceOf(ctx context.Context) *Trace {
	t, _ := ctx.Value(traceKey{}).(*Trace)
	return t
}

// Retryable tells a failure worth another attempt: no answer (a dropped
// or refused connection, a time-out), 500, 502, 503, 504, 408, 429, or the
// store's codes for the same (SlowDown, RequestTimeout, ...).
func Retryable(err error) bool {
	var e *Error
	if !errors.As(err, &e) {
		return false
	}
	if e.Status == 0 {
		return !errors.Is(e.Err, context.Canceled) && !errors.Is(e.Err, context.DeadlineExceeded)
	}
	switch e.Code {
	case "SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "Throttling", "ThrottlingException", "RequestLimitExceeded":
		return true
	}
	switch e.Status {
	case http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout,
		http.StatusRequestTimeout, http.StatusTooManyRequests:
		return true
	}
	return false // 501 NotImplemented and the 4xx are the store's answer
}

// connectionFailed tells a call that got no connection at all.
func connectionFailed(err error) bool {
	var dns *net.DNSError
	var op *net.OpError
	return Status(err) == 0 && (errors.As(err, &dns) || (errors.As(err, &op) && op.Op == "dial"))
}

// Retrying is a Store that tries every call of the one it wraps again on a
// failure worth it (Retryable), as Policy says, each attempt waiting for
// its turn at the store's Pacer; request bodies are rewound first. It is
// the one place where calls are repeated. A call whose context ends
// returns the context's cause, with the last failure in its message.
type Retrying struct {
	s     Store
	p     Policy
	pacer *Pacer
}

var _ Store = (*Retrying)(nil)

// NewRetrying wraps s; pacer is the store's, shared by every Retrying of
// it in the process (nil: its own).
func NewRetrying(s Store, p Policy, pacer *Pacer) *Retrying {
	if pacer == nil {
		pacer = NewPacer(0)
	}
	return &Retrying{s: s, p: p.withDefaults(), pacer: pacer}
}

// With is the same store, its calls tried as p says.
func (r *Retrying) With(p Policy) *Retrying {
	return &Retrying{s: r.s, p: p.withDefaults(), pacer: r.pacer}
}

// do runs call until it succeeds, fails for good, runs out of attempts or
// ctx ends.
func (r *Retrying) do(ctx context.Context, op, key string, part int32, call func() error) error {
	var last error
	for attempt := 1; ; attempt++ {
		if err := r.pacer.wait(ctx); err != nil {
			return ended(ctx, last)
		}
		err := call()
		if err == nil || !connectionFailed(err) {
			r.pacer.reached.Store(true)
		}
		if err == nil {
			r.pacer.succeeded()
			return nil
		}
		if ctx.Err() != nil {
			return ended(ctx, err)
		}
		if !Retryable(err) {
			return err
		}
		r.pacer.failed()
		d := r.backoff(attempt)
		stranger := !r.pacer.reached.Load() && connectionFailed(err)
		if stranger && attempt >= firstContactAttempts {
			return err // the connection cannot be made: it says so
		}
		if attempt >= r.p.Attempts {
			if attempt > 1 {
				err = fmt.Errorf("%w (%d attempts)", err, attempt)
			}
			return err
		}
		if stranger {
			d = min(d, firstContactBackoff)
		}
		r.pacer.retries.Add(1)
		// A store never reached is given up in a second: its retries
		// are not worth a word.
		if t := traceOf(ctx); t != nil && t.Retry != nil && !stranger {
			t.Retry(Retry{Op: op, Key: key, Part: part, Attempt: attempt, Attempts: r.p.Attempts, Err: err, Delay: d, Pacing: r.pacer.Pacing()})
		}
		last = err
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ended(ctx, last)
		}
	}
}

// backoff is the wait after attempt: doubling from MinBackoff, at most
// MaxBackoff, between half and all of it.
func (r *Retrying) backoff(attempt int) time.Duration {
	d := r.p.MaxBackoff
	if attempt < 30 {
		d = min(d, r.p.MinBackoff<<(attempt-1))
	}
	return d/2 + rand.N(d/2+1)
}

// ended is the error of a call whose context ended: the context's cause,
// with the last failure, if any, in its message.
func ended(ctx context.Context, last error) error {
	cause := context.Cause(ctx)
	if last == nil {
		return cause
	}
	return fmt.Errorf("%w (the last attempt: %v)", cause, last)
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

func (r *Retrying) CreateUpload(ctx context.Context, key string, meta map[string]string) (id string, err error) {
	err = r.do(ctx, "CreateMultipartUpload", key, 0, func() (err error) { id, err = r.s.CreateUpload(ctx, key, meta); return })
	return id, err
}

func (r *Retrying) UploadPart(ctx context.Context, key, uploadID string, num int32, body io.ReadSeeker, size int64, md5 [16]byte) (etag string, err error) {
	err = r.do(ctx, "UploadPart", key, num, rewound(body, func() (err error) {
		etag, err = r.s.UploadPart(ctx, key, uploadID, num, body, size, md5)
		return
	}))
	return etag, err
}

func (r *Retrying) CopyPart(ctx context.Context, key, uploadID string, num int32, srcKey string, n int64) (etag string, err error) {
	err = r.do(ctx, "UploadPartCopy", key, num, func() (err error) { etag, err = r.s.CopyPart(ctx, key, uploadID, num, srcKey, n); return })
	return etag, err
}

func (r *Retrying) ListParts(ctx context.Context, key, uploadID string) (parts []Part, err error) {
	err = r.do(ctx, "ListParts", key, 0, func() (err error) { parts, err = r.s.ListParts(ctx, key, uploadID); return })
	return parts, err
}

func (r *Retrying) Complete(ctx context.Context, key, uploadID string, etags []string) (etag string, err error) {
	err = r.do(ctx, "CompleteMultipartUpload", key, 0, func() (err error) { etag, err = r.s.Complete(ctx, key, uploadID, etags); return })
	return etag, err
}

func (r *Retrying) AbortUpload(ctx context.Context, key, uploadID string) error {
	return r.do(ctx, "AbortMultipartUpload", key, 0, func() error { return r.s.AbortUpload(ctx, key, uploadID) })
}

func (r *Retrying) ListUploads(ctx context.Context, prefix string) (ups []Upload, err error) {
	err = r.do(ctx, "ListMultipartUploads", prefix, 0, func() (err error) { ups, err = r.s.ListUploads(ctx, prefix); return })
	return ups, err
}

func (r *Retrying) List(ctx context.Context, prefix string) (objs []Object, err error) {
	err = r.do(ctx, "ListObjectsV2", prefix, 0, func() (err error) { objs, err = r.s.List(ctx, prefix); return })
	return objs, err
}

func (r *Retrying) Head(ctx context.Context, key string) (o Object, err error) {
	err = r.do(ctx, "HeadObject", key, 0, func() (err error) { o, err = r.s.Head(ctx, key); return })
	return o, err
}

func (r *Retrying) Put(ctx context.Context, key string, body io.ReadSeeker, size int64, md5 [16]byte) error {
	return r.do(ctx, "PutObject", key, 0, rewound(body, func() error { return r.s.Put(ctx, key, body, size, md5) }))
}

func (r *Retrying) Delete(ctx context.Context, key string) error {
	return r.do(ctx, "DeleteObject", key, 0, func() error { return r.s.Delete(ctx, key) })
}

// Get retries until the store answers; reading the body is the caller's.
func (r *Retrying) Get(ctx context.Context, key string, off, n int64, ifMatch string) (rc io.ReadCloser, rg Range, err error) {
	err = r.do(ctx, "GetObject", key, 0, func() (err error) { rc, rg, err = r.s.Get(ctx, key, off, n, ifMatch); return })
	return rc, rg, err
}

func (r *Retrying) Stat(ctx context.Context) error {
	return r.do(ctx, "HeadBucket", "", 0, func() error { return r.s.Stat(ctx) })
}

func (r *Retrying) Location(ctx context.Context) (loc string, err error) {
	err = r.do(ctx, "GetBucketLocation", "", 0, func() (err error) { loc, err = r.s.Location(ctx); return })
	return loc, err
}
