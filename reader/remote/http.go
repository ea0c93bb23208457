package remote

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"vmimport/internal/safetext"
	"vmimport/reader/image"
)

// newHTTPClient is a client for many ranges in flight: HTTP/1.1 (parallel
// ranges on parallel connections, not multiplexed on one), enough idle
// connections kept alive for them, proxies from the environment.
func newHTTPClient(idle time.Duration) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ForceAttemptHTTP2 = false
	t.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	t.MaxIdleConns = 256
	t.MaxIdleConnsPerHost = 64
	t.ResponseHeaderTimeout = idle
	t.DisableCompression = true
	return &http.Client{Transport: t}
}

// httpObject is a file on a web server.
type httpObject struct {
	client *http.Client
	url    *url.URL // without user info
	user   *url.Userinfo
	shown  string // the URL for messages, credentials redacted
	header http.Header
	idle   time.Duration
	pace   pace
	id     Identity
	// strong is the ETag to send with If-Match; "" without a strong one.
	strong string
	// lastMod is the Last-Modified header as sent, for
	// If-Unmodified-Since when there is no strong ETag.
	lastMod string
}

func (h *httpObject) identity() Identity { return h.id }
func (h *httpObject) display() string    { return h.shown }

// openHTTP learns the file's size and version with a first ranged GET of
// its first chunk, whose bytes it returns for the cache. A HEAD would do
// for most servers, but a presigned URL is often signed for GET alone.
func (op *Opener) openHTTP(raw string, probe int64) (*httpObject, []byte, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: not a usable URL: %w", image.Redact(raw), errors.Unwrap(err))
	}
	if u.Host == "" {
		return nil, nil, fmt.Errorf("%s: the URL names no host", image.Redact(raw))
	}
	u.Scheme = strings.ToLower(u.Scheme)
	u.Fragment = ""
	h := &httpObject{client: op.http, user: u.User, shown: image.Redact(raw), idle: op.o.IdleTimeout, pace: op.pace()}
	u.User = nil
	h.url = u
	h.header = op.headersFor(u)
	name := *u
	name.RawQuery = ""
	h.id.URL = name.String()

	p := make([]byte, probe)
	var first []byte
	backoff := op.o.MinBackoff
	for attempt := 1; ; attempt++ {
		op.c.requests.Add(1)
		first, err = h.probe(op.ctx, p, &op.c)
		if err == nil {
			break
		}
		if cerr := op.ctx.Err(); cerr != nil {
			return nil, nil, cerr
		}
		if !isTransient(err) || attempt > op.o.Retries {
			var e *Error
			if errors.As(err, &e) {
				e.Attempts = attempt
			}
			return nil, nil, unwrapTransient(err)
		}
		op.c.retries.Add(1)
		if err := sleep(op.ctx, jitter(backoff)); err != nil {
			return nil, nil, err
		}
		backoff = min(2*backoff, op.o.MaxBackoff)
	}
	if h.strong == "" && h.lastMod == "" {
		op.warn("%s: the server sends neither an ETag nor a Last-Modified: a change of the file while it is read can only be seen if its size changes", h.shown)
	}
	return h, first, nil
}

// probe is the first request: bytes 0..len(p)-1, or less for a smaller
// file.
func (h *httpObject) probe(ctx context.Context, p []byte, c *counters) ([]byte, error) {
	what := fmt.Sprintf("GET bytes=0-%d", len(p)-1)
	resp, cancel, err := h.get(ctx, 0, int64(len(p)), false)
	if err != nil {
		return nil, h.fail(what, 0, err)
	}
	defer cancel()
	defer drain(resp.Body)
	switch resp.StatusCode {
	case http.StatusPartialContent:
	case http.StatusOK:
		if resp.ContentLength == 0 {
			// An empty file: some servers (Go's among them) answer a
			// range of it with an empty 200.
			h.pin(resp.Header, 0)
			return nil, nil
		}
		return nil, h.fail(what, resp.StatusCode, fmt.Errorf("%w: it answered a Range request with the whole file (200 OK); convert reads images in place and does not download them whole: serve the file from a server that honours Range requests (nginx, Apache, S3, ...)", ErrNoRanges))
	case http.StatusRequestedRangeNotSatisfiable:
		// An empty file has no byte 0: "bytes */0".
		if total, ok := unsatisfiedSize(resp.Header.Get("Content-Range")); ok && total == 0 {
			h.pin(resp.Header, 0)
			return nil, nil
		}
		return nil, h.fail(what, resp.StatusCode, ErrStatus)
	default:
		return nil, h.statusError(what, resp)
	}
	if strings.EqualFold(resp.Header.Get("Accept-Ranges"), "none") {
		return nil, h.fail(what, resp.StatusCode, fmt.Errorf("%w (Accept-Ranges: none)", ErrNoRanges))
	}
	if ce := resp.Header.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		return nil, h.fail(what, resp.StatusCode, fmt.Errorf("the server sent the range with Content-Encoding %q: ranges of an encoded body are not the file's bytes", ce))
	}
	start, end, total, err := parseContentRange(resp.Header.Get("Content-Range"))
	switch {
	case err != nil:
		return nil, h.fail(what, resp.StatusCode, err)
	case total < 0:
		return nil, h.fail(what, resp.StatusCode, errors.New("the server does not tell the file's size (Content-Range: .../*)"))
	case start != 0 || end >= int64(len(p)) || end != min(int64(len(p)), total)-1:
		return nil, h.fail(what, resp.StatusCode, fmt.Errorf("the server answered with Content-Range %q", resp.Header.Get("Content-Range")))
	}
	h.pin(resp.Header, total)
	n := int(end + 1)
	if err := h.body(resp.Body, [][]byte{p[:n]}, c, cancel); err != nil {
		return nil, h.fail(what, resp.StatusCode, err)
	}
	return p[:n], nil
}

// pin records the version the first answer showed.
func (h *httpObject) pin(hd http.Header, size int64) {
	h.id.Size = size
	h.id.ETag = hd.Get("ETag")
	if et := h.id.ETag; et != "" && !strings.HasPrefix(et, "W/") {
		h.strong = et
	}
	h.lastMod = hd.Get("Last-Modified")
	if t, err := http.ParseTime(h.lastMod); err == nil {
		h.id.LastModified = t.UTC()
	} else {
		h.lastMod = ""
	}
}

// fetch fills dst from off in one ranged GET.
func (h *httpObject) fetch(ctx context.Context, dst [][]byte, off int64, c *counters) error {
	n := total(dst)
	what := fmt.Sprintf("GET bytes=%d-%d", off, off+n-1)
	resp, cancel, err := h.get(ctx, off, n, true)
	if err != nil {
		return h.fail(what, 0, err)
	}
	defer cancel()
	defer drain(resp.Body)
	switch resp.StatusCode {
	case http.StatusPartialContent:
	case http.StatusOK:
		return h.fail(what, resp.StatusCode, fmt.Errorf("%w: it answered with the whole file (200 OK)", ErrNoRanges))
	case http.StatusPreconditionFailed:
		return h.fail(what, resp.StatusCode, fmt.Errorf("%w: its ETag or modification time is no longer %s", ErrChanged, h.version()))
	case http.StatusRequestedRangeNotSatisfiable:
		return h.fail(what, resp.StatusCode, fmt.Errorf("%w: it is shorter than the %d bytes it had", ErrChanged, h.id.Size))
	default:
		return h.statusError(what, resp)
	}
	if err := h.sameVersion(resp.Header); err != nil {
		return h.fail(what, resp.StatusCode, err)
	}
	start, end, total, err := parseContentRange(resp.Header.Get("Content-Range"))
	switch {
	case err != nil:
		return h.fail(what, resp.StatusCode, err)
	case total >= 0 && total != h.id.Size:
		return h.fail(what, resp.StatusCode, fmt.Errorf("%w: it is %d bytes long now, %d before", ErrChanged, total, h.id.Size))
	case start != off || end != off+n-1:
		return h.fail(what, resp.StatusCode, fmt.Errorf("the server answered with Content-Range %q", resp.Header.Get("Content-Range")))
	}
	if err := h.body(resp.Body, dst, c, cancel); err != nil {
		return h.fail(what, resp.StatusCode, err)
	}
	return nil
}

// version describes the pinned version for messages.
func (h *httpObject) version() string {
	if h.id.ETag != "" {
		return "ETag " + safetext.Escape(h.id.ETag)
	}
	if h.lastMod != "" {
		return "Last-Modified " + h.lastMod
	}
	return "what it was"
}

// sameVersion checks an answer's validators against the pinned ones, for
// servers that ignore If-Match and If-Unmodified-Since.
func (h *httpObject) sameVersion(hd http.Header) error {
	if et := hd.Get("ETag"); et != "" && h.id.ETag != "" && et != h.id.ETag {
		return fmt.Errorf("%w: its ETag was %s, now %s", ErrChanged, safetext.Escape(h.id.ETag), safetext.Escape(et))
	}
	if lm := hd.Get("Last-Modified"); lm != "" && h.lastMod != "" && lm != h.lastMod {
		return fmt.Errorf("%w: it was last modified %s, now %s", ErrChanged, safetext.Escape(h.lastMod), safetext.Escape(lm))
	}
	return nil
}

// get sends a GET of n bytes at off; pinned adds the version's
// preconditions. The returned cancel ends the request: the caller calls
// it once the body is read.
func (h *httpObject) get(ctx context.Context, off, n int64, pinned bool) (*http.Response, context.CancelFunc, error) {
	rctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, h.url.String(), nil)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	for k, vs := range h.header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	if h.user != nil {
		pw, _ := h.user.Password()
		req.SetBasicAuth(h.user.Username(), pw)
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, off+n-1))
	// Ranges of the identity encoding: Go's transport would ask for gzip.
	req.Header.Set("Accept-Encoding", "identity")
	if pinned {
		if h.strong != "" {
			req.Header.Set("If-Match", h.strong)
		} else if h.lastMod != "" {
			req.Header.Set("If-Unmodified-Since", h.lastMod)
		}
	}
	resp, err := h.client.Do(req)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	return resp, cancel, nil
}

// body fills the buffers of dst from the body, dropping the request when
// nothing comes for the idle time-out, or too little for the pace.
func (h *httpObject) body(r io.Reader, dst [][]byte, c *counters, cancel context.CancelFunc) error {
	t := time.AfterFunc(h.idle, cancel)
	defer t.Stop()
	var got atomic.Int64
	slow := h.pace.watch(&got, total(dst), cancel)
	defer slow.stop()
	for i, p := range dst {
		for done := 0; done < len(p); {
			n, err := r.Read(p[done:])
			done += n
			got.Add(int64(n))
			c.bytes.Add(int64(n))
			if n > 0 {
				t.Reset(h.idle)
			}
			if err != nil {
				if done == len(p) && i == len(dst)-1 {
					return nil
				}
				if slow.fired() {
					return transient{fmt.Errorf("the body came at less than %s over %s (%d of %d bytes): dropped as a stall", h.pace.rate(), h.pace.window, got.Load(), total(dst))}
				}
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return transient{fmt.Errorf("the body ended after %d of %d bytes: %w", got.Load(), total(dst), err)}
			}
		}
	}
	return nil
}

func total(dst [][]byte) int64 {
	var n int64
	for _, p := range dst {
		n += int64(len(p))
	}
	return n
}

// fail wraps an error of a request; network errors and short bodies are
// transient.
func (h *httpObject) fail(what string, status int, err error) error {
	var re *RedirectError
	if errors.As(err, &re) {
		return &Error{URL: h.shown, What: what, Err: re} // final: a retry goes the same way
	}
	e := &Error{URL: h.shown, What: what, Status: status, Err: err}
	if isTransient(err) {
		return transient{e}
	}
	var ne net.Error
	var ue *url.Error
	if status == 0 && (errors.As(err, &ne) || errors.As(err, &ue) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)) {
		// url.Error's text repeats the URL, with its query: keep the cause.
		if ue != nil {
			e.Err = ue.Err
		}
		return transient{e}
	}
	return e
}

// statusError is the error of an answer with an unexpected status: 5xx,
// 408 and 429 are transient, other statuses final.
func (h *httpObject) statusError(what string, resp *http.Response) error {
	e := &Error{URL: h.shown, What: what, Status: resp.StatusCode, Err: ErrStatus}
	if resp.StatusCode >= 500 || resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode == http.StatusTooManyRequests {
		return transient{e}
	}
	switch resp.StatusCode {
	case http.StatusUnauthorized, http.StatusForbidden:
		e.Err = refusal("check the URL and its credentials (--source-header, or a fresh presigned URL)")
	case http.StatusNotFound:
		e.Err = refusal("no such file")
	}
	return e
}

// drain reads a little of what is left of a body and closes it, so that
// the connection can be reused.
func drain(body io.ReadCloser) {
	io.Copy(io.Discard, io.LimitReader(body, 64<<10))
	body.Close()
}

// parseContentRange reads "bytes START-END/TOTAL" (TOTAL may be *: -1).
func parseContentRange(s string) (start, end, total int64, err error) {
	bad := fmt.Errorf("the server answered with a malformed Content-Range %q", s)
	rest, ok := strings.CutPrefix(strings.TrimSpace(s), "bytes ")
	if !ok {
		return 0, 0, 0, bad
	}
	rng, tot, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, 0, 0, bad
	}
	a, b, ok := strings.Cut(rng, "-")
	if !ok {
		return 0, 0, 0, bad
	}
	if start, err = strconv.ParseInt(a, 10, 64); err != nil || start < 0 {
		return 0, 0, 0, bad
	}
	if end, err = strconv.ParseInt(b, 10, 64); err != nil || end < start {
		return 0, 0, 0, bad
	}
	total = -1
	if tot != "*" {
		if total, err = strconv.ParseInt(tot, 10, 64); err != nil || total <= end {
			return 0, 0, 0, bad
		}
	}
	return start, end, total, nil
}

// unsatisfiedSize reads "bytes */TOTAL" of a 416 answer.
func unsatisfiedSize(s string) (int64, bool) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(s), "bytes */")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(rest, 10, 64)
	return n, err == nil && n >= 0
}
