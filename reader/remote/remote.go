// Package remote reads files where they are, over the network: an
// io.ReaderAt over HTTP Range requests (https://, http://) or over S3
// GetObject with a Range (s3://bucket/key), for the format readers, which
// all take an io.ReaderAt.
//
// Nothing is staged: each read becomes a ranged request. In front sits one
// small cache, shared by every file an Opener opens, of aligned pages
// (Options.PageSize, 64 KiB) kept in least-recently-used order, at most
// Options.CacheChunks x Options.ChunkSize bytes of them (32 x 1 MiB).
// Reads shorter than a chunk (the metadata reads of every format,
// compressed grains and clusters) fetch and keep the pages around them,
// and a whole chunk from there when they continue what the cache holds (a
// pass of small reads in file order); longer reads (the data blocks of the
// pipeline) take what the cache already holds and fetch the rest straight
// into the caller's buffer, so N pipeline workers keep N ranges in
// flight. Concurrent reads of one page wait for one request.
//
// A file is pinned to the version first seen: its ETag (If-Match) or,
// without a strong ETag, its Last-Modified (If-Unmodified-Since), and its
// size; a file that changes while it is read fails with ErrChanged, never
// with bytes of two versions. A server that does not serve ranges is
// refused (ErrNoRanges): nothing is downloaded whole. A dropped
// connection, a short body, a 5xx, 408 or 429 is retried with backoff for
// that range only, up to Options.Retries times; any other 4xx fails at
// once. Errors name the URL with its credentials redacted (image.Redact).
package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"vmimport/internal/objstore"
	"vmimport/reader/image"
)

// Errors of remote reads. Match them with errors.Is.
var (
	// ErrNoRanges: the server answered a ranged request with the whole
	// file (200) or says it serves no ranges.
	ErrNoRanges = errors.New("the server does not serve byte ranges")
	// ErrChanged: the file changed (ETag, Last-Modified or size) since it
	// was first read.
	ErrChanged = errors.New("the file changed while it was read")
	// ErrStatus: the server refused the request (a 4xx, or a 5xx after
	// every retry); the Error carries the status.
	ErrStatus = errors.New("refused by the server")
)

// Defaults of Options.
const (
	DefaultChunkSize   = 1 << 20
	DefaultCacheChunks = 32
	DefaultPageSize    = 64 << 10
	DefaultRetries     = 5
	DefaultMinBackoff  = 250 * time.Millisecond
	DefaultMaxBackoff  = 15 * time.Second
	DefaultIdleTimeout = 60 * time.Second
	DefaultMinRate     = 64 << 10
	DefaultRateWindow  = 60 * time.Second
)

// Options configure an Opener. The zero value means the defaults.
type Options struct {
	// Header holds extra HTTP headers ("Authorization", "Cookie", ...).
	// They go only to the origin (scheme, host and port) of the first
	// http(s) URL opened (the source the user named), never to another an
	// image names or a server redirects to.
	Header http.Header
	// AllowPaths are the URL prefixes (and folders, ignored here) that
	// files outside the source's origin may be read from: a redirect to
	// another origin is followed only under one of them.
	AllowPaths []string
	// S3 returns the store of a bucket, for s3:// files: its calls made
	// once each (this package retries a range itself). nil: s3:// is
	// refused.
	S3 func(ctx context.Context, bucket string) (objstore.Store, error)
	// HTTPClient replaces the default client (keep-alive connections,
	// HTTP/1.1 so that parallel ranges use parallel connections).
	HTTPClient *http.Client
	// Retries is how many times one range is retried after a transient
	// failure (default 5; negative: none).
	Retries int
	// MinBackoff and MaxBackoff bound the wait between attempts, which
	// doubles from the first to the second, with jitter.
	MinBackoff, MaxBackoff time.Duration
	// IdleTimeout drops a response that sends nothing for this long (the
	// range is then retried).
	IdleTimeout time.Duration
	// MinRate and RateWindow drop a response whose body brings less than
	// MinRate bytes a second over a RateWindow (or less than what is left
	// of it): a source that trickles a byte every few seconds restarts the
	// idle timer for ever, and is retried as a stall instead (default 64
	// KiB/s over 60 s; a negative MinRate: no minimum).
	MinRate    int64
	RateWindow time.Duration
	// ChunkSize is the most a small read fetches and the threshold of a
	// large read (default 1 MiB); the cache holds at most CacheChunks x
	// ChunkSize bytes (default 32) in pages of PageSize (default 64 KiB,
	// at most ChunkSize).
	ChunkSize   int64
	CacheChunks int
	PageSize    int64
	// Warn receives findings worth a word (a server without ETag or
	// Last-Modified). May be nil.
	Warn func(string)
}

func (o Options) withDefaults() Options {
	if o.Retries == 0 {
		o.Retries = DefaultRetries
	}
	if o.Retries < 0 {
		o.Retries = 0
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = DefaultMinBackoff
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = DefaultMaxBackoff
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = o.MinBackoff
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.MinRate == 0 {
		o.MinRate = DefaultMinRate
	}
	if o.RateWindow <= 0 {
		o.RateWindow = DefaultRateWindow
	}
	if o.ChunkSize <= 0 {
		o.ChunkSize = DefaultChunkSize
	}
	if o.CacheChunks <= 0 {
		o.CacheChunks = DefaultCacheChunks
	}
	if o.PageSize <= 0 {
		o.PageSize = DefaultPageSize
	}
	o.PageSize = min(o.PageSize, o.ChunkSize)
	return o
}

// CacheBytes is the memory the cache of an Opener with o may hold.
func (o Options) CacheBytes() int64 {
	o = o.withDefaults()
	return o.ChunkSize * int64(o.CacheChunks)
}

// Stats count the requests of an Opener.
type Stats struct {
	// Bytes is what the servers sent in response bodies: what crossed the
	// network for the image.
	Bytes int64 `json:"bytes"`
	// Requests counts ranged requests (and S3 HeadObject), retries
	// included; Retries counts the retries alone.
	Requests int64 `json:"requests"`
	Retries  int64 `json:"retries"`
	// Hits and Misses count the reads of cached chunks.
	Hits   int64 `json:"cache_hits"`
	Misses int64 `json:"cache_misses"`
}

type counters struct {
	bytes, requests, retries, hits, misses atomic.Int64
}

// Identity pins one version of a remote file.
type Identity struct {
	// URL is the file's address without credentials or query.
	URL          string    `json:"url"`
	Size         int64     `json:"size"`
	ETag         string    `json:"etag,omitempty"`
	LastModified time.Time `json:"last_modified,omitzero"`
}

// Error is a remote request that failed.
type Error struct {
	// URL is the file's URL, credentials redacted.
	URL string
	// What is the request: "GET bytes=0-1048575".
	What string
	// Status is the HTTP status, 0 when there was no answer.
	Status int
	// Attempts is how many times the request was tried.
	Attempts int
	Err      error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.URL)
	if e.What != "" {
		b.WriteString(": " + e.What)
	}
	if e.Status != 0 {
		fmt.Fprintf(&b, ": HTTP %d %s", e.Status, http.StatusText(e.Status))
	}
	if e.Err != nil && e.Err != ErrStatus {
		b.WriteString(": " + e.Err.Error())
	}
	if e.Attempts > 1 {
		fmt.Fprintf(&b, " (%d attempts)", e.Attempts)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// refusal is what a refusing status means, as a hint; it matches
// ErrStatus.
type refusal string

func (r refusal) Error() string        { return string(r) }
func (r refusal) Is(target error) bool { return target == ErrStatus }

// transient marks an error a retry may cure.
type transient struct{ error }

func (t transient) Unwrap() error { return t.error }

func isTransient(err error) bool {
	var t transient
	return errors.As(err, &t)
}

// object is one remote file of a given version.
type object interface {
	// fetch fills the buffers of dst, one after the other, with the
	// file's bytes from off in one request, counting what the body brought
	// in c. Errors a retry may cure are transient.
	fetch(ctx context.Context, dst [][]byte, off int64, c *counters) error
	identity() Identity
	display() string
}

// Opener opens remote files and keeps what they share: the context
// requests run under, the HTTP client, the S3 client, the cache and the
// counters. It is an image.Remote; its methods are safe for concurrent use.
type Opener struct {
	ctx   context.Context
	o     Options
	http  *http.Client
	cache *cache
	c     counters

	mu         sync.Mutex
	headerHost string // the origin Options.Header goes to
	nextID     int
	pinned     map[string]Identity // by URL as opened
}

var _ image.Remote = (*Opener)(nil)

// New returns an Opener whose requests run under ctx: cancelling it fails
// the reads in flight.
func New(ctx context.Context, o Options) *Opener {
	o = o.withDefaults()
	op := &Opener{ctx: ctx, o: o}
	client := o.HTTPClient
	if client == nil {
		client = newHTTPClient(o.IdleTimeout)
	}
	c := *client // the caller's own client keeps its redirect policy
	c.CheckRedirect = op.checkRedirect
	op.http = &c
	op.cache = newCache(o.PageSize, o.ChunkSize, int(max(1, o.ChunkSize*int64(o.CacheChunks)/o.PageSize)))
	return op
}

// Close closes the connections the opener keeps (HTTP keep-alives) once
// its files are closed: a finished job holds none. (The stores of s3://
// files are Options.S3's, and closed by whoever gave them.)
func (op *Opener) Close() { op.http.CloseIdleConnections() }

// Stats returns the counts so far.
func (op *Opener) Stats() Stats {
	return Stats{
		Bytes: op.c.bytes.Load(), Requests: op.c.requests.Load(), Retries: op.c.retries.Load(),
		Hits: op.c.hits.Load(), Misses: op.c.misses.Load(),
	}
}

// OpenRemote opens the file at rawURL: one first request learns its size
// and version (and its first chunk goes into the cache). The Source's Path
// is the URL with credentials redacted.
func (op *Opener) OpenRemote(rawURL string) (image.Source, io.Closer, error) {
	f, err := op.open(rawURL, op.o.ChunkSize)
	if err != nil {
		return image.Source{}, nil, err
	}
	return image.Source{R: f, Size: f.size, Path: f.obj.display(), Fd: -1, Remote: true}, f, nil
}

// Identify returns the identity of the file at rawURL (its URL, size and
// version) with one small request.
func (op *Opener) Identify(rawURL string) (Identity, error) {
	f, err := op.open(rawURL, 1)
	if err != nil {
		return Identity{}, err
	}
	defer f.Close()
	return f.obj.identity(), nil
}

// Pinned returns the identity of a file opened with OpenRemote: the
// version its reads are pinned to.
func (op *Opener) Pinned(rawURL string) (Identity, bool) {
	op.mu.Lock()
	defer op.mu.Unlock()
	id, ok := op.pinned[rawURL]
	return id, ok
}

// IdentityOf returns the identity of the remote file src reads, if it is
// one this package opened.
func IdentityOf(src io.ReaderAt) (Identity, bool) {
	if f, ok := src.(*File); ok {
		return f.obj.identity(), true
	}
	return Identity{}, false
}

// open opens rawURL; the first request asks for probe bytes.
func (op *Opener) open(rawURL string, probe int64) (*File, error) {
	if err := op.ctx.Err(); err != nil {
		return nil, err
	}
	op.mu.Lock()
	op.nextID++
	id := op.nextID
	op.mu.Unlock()
	f := &File{op: op, id: id}
	var first []byte
	var err error
	switch {
	case hasScheme(rawURL, "s3"):
		f.obj, err = op.openS3(rawURL)
	case hasScheme(rawURL, "http"), hasScheme(rawURL, "https"):
		var h *httpObject
		h, first, err = op.openHTTP(rawURL, probe)
		if h != nil {
			f.obj = h
		}
	default:
		err = fmt.Errorf("%s: not an http://, https:// or s3:// URL", image.Redact(rawURL))
	}
	if err != nil {
		return nil, err
	}
	f.size = f.obj.identity().Size
	if len(first) > 0 {
		op.cache.put(f.id, f.size, first)
	}
	op.mu.Lock()
	if op.pinned == nil {
		op.pinned = map[string]Identity{}
	}
	op.pinned[rawURL] = f.obj.identity()
	op.mu.Unlock()
	return f, nil
}

func hasScheme(s, scheme string) bool {
	return len(s) > len(scheme)+3 && strings.EqualFold(s[:len(scheme)+3], scheme+"://")
}

// fetch reads one range of f into the buffers of dst, with retries.
func (op *Opener) fetch(f *File, dst [][]byte, off int64) error {
	backoff := op.o.MinBackoff
	for attempt := 1; ; attempt++ {
		op.c.requests.Add(1)
		err := f.obj.fetch(op.ctx, dst, off, &op.c)
		if err == nil {
			return nil
		}
		if cerr := op.ctx.Err(); cerr != nil {
			return cerr
		}
		if !isTransient(err) || attempt > op.o.Retries {
			var e *Error
			if errors.As(err, &e) {
				e.Attempts = attempt
			}
			return &os.PathError{Op: "read", Path: f.obj.display(), Err: unwrapTransient(err)}
		}
		op.c.retries.Add(1)
		if err := sleep(op.ctx, jitter(backoff)); err != nil {
			return err
		}
		backoff = min(2*backoff, op.o.MaxBackoff)
	}
}

// unwrapTransient drops the transient mark (callers match the cause).
func unwrapTransient(err error) error {
	var t transient
	if errors.As(err, &t) && err == error(t) {
		return t.error
	}
	return err
}

func jitter(d time.Duration) time.Duration {
	// 75%..125% of d, from the clock's low bits: no global random state.
	n := time.Now().UnixNano()
	return d*3/4 + time.Duration(n%int64(d/2+1))
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// headersFor returns the extra headers for a request to u: Options.Header
// on the source's host only.
func (op *Opener) headersFor(u *url.URL) http.Header {
	op.mu.Lock()
	defer op.mu.Unlock()
	if op.headerHost == "" {
		op.headerHost = origin(u)
	}
	if origin(u) != op.headerHost {
		return nil
	}
	return op.o.Header
}

func (op *Opener) warn(format string, args ...any) {
	if op.o.Warn != nil {
		op.o.Warn(fmt.Sprintf(format, args...))
	}
}

// File is one remote file: an io.ReaderAt, safe for concurrent use, that
// reads through the Opener's cache.
type File struct {
	op   *Opener
	obj  object
	id   int
	size int64
}

// Size is the file's size.
func (f *File) Size() int64 { return f.size }

// ReadAt reads len(p) bytes at off, or up to the end of the file with
// io.EOF.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("%s: negative offset %d", f.obj.display(), off)
	}
	if off >= f.size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), f.size-off))
	if err := f.op.cache.read(f, p[:n], off); err != nil {
		return 0, err
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Close drops the file's chunks from the cache.
func (f *File) Close() error {
	f.op.cache.drop(f.id)
	return nil
}
