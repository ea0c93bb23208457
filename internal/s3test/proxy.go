package s3test

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Op names the S3 operation of a request, roughly.
func Op(r *http.Request) string {
	q := r.URL.Query()
	switch {
	case r.Method == http.MethodPut && r.Header.Get("X-Amz-Copy-Source") != "" && q.Has("partNumber"):
		return "UploadPartCopy"
	case r.Method == http.MethodPut && q.Has("partNumber"):
		return "UploadPart"
	case r.Method == http.MethodPost && q.Has("uploadId"):
		return "CompleteMultipartUpload"
	case r.Method == http.MethodPost && q.Has("uploads"):
		return "CreateMultipartUpload"
	case r.Method == http.MethodDelete && q.Has("uploadId"):
		return "AbortMultipartUpload"
	case r.Method == http.MethodPut:
		return "PutObject"
	case r.Method == http.MethodGet:
		return "Get"
	}
	return r.Method
}

// Fault is what the proxy does to one request.
type Fault int

const (
	Pass        Fault = iota
	Fail500           // answer 500 InternalError without forwarding
	Drop              // read some of the body, then close the connection
	Slow              // wait Delay, then forward
	Refuse501         // answer 501 NotImplemented
	Deny403           // answer 403 AccessDenied
	SlowOnReply       // forward, then wait Delay before answering
	WrongETag         // forward, then answer with another ETag (header and XML body) than the server's
	CutReply          // forward, then drop the connection after half of the answer's body
)

// wrongETag is the ETag WrongETag answers with.
const wrongETag = `"0123456789abcdef0123456789abcdef"`

// etagRewriter replaces the ETag of an answer, in its header and in an XML
// body (UploadPartCopy, CompleteMultipartUpload), which it buffers.
type etagRewriter struct {
	http.ResponseWriter
	code int
	body bytes.Buffer
}

func (e *etagRewriter) WriteHeader(code int) { e.code = code }
func (e *etagRewriter) Write(b []byte) (int, error) {
	return e.body.Write(b)
}

func (e *etagRewriter) flush() {
	if e.Header().Get("ETag") != "" {
		e.Header().Set("ETag", wrongETag)
	}
	body := etagXML.ReplaceAll(e.body.Bytes(), []byte("<ETag>"+wrongETag+"</ETag>"))
	e.Header().Set("Content-Length", strconv.Itoa(len(body)))
	if e.code == 0 {
		e.code = http.StatusOK
	}
	e.ResponseWriter.WriteHeader(e.code)
	e.ResponseWriter.Write(body)
}

var etagXML = regexp.MustCompile(`<ETag>[^<]*</ETag>`)

// Proxy is a reverse proxy to the server that counts the request bytes it
// forwards and injects faults. The Host header passes unchanged, so SigV4
// signatures made for the proxy's address stay valid.
type Proxy struct {
	URL       string
	delay     time.Duration
	decide    func(op string, n int) Fault
	decideKey func(op, path string, n int) Fault

	Sent     atomic.Int64 // request body bytes forwarded to the server
	Served   atomic.Int64 // answer body bytes sent back to the client
	mu       sync.Mutex
	count    map[string]int
	done     map[string]int
	srv      *httptest.Server
	upstream *httputil.ReverseProxy
}

// NewProxy starts a proxy in front of s.
func NewProxy(s *Server) *Proxy {
	target, err := url.Parse(s.Endpoint)
	if err != nil {
		panic(err)
	}
	p := &Proxy{count: map[string]int{}, done: map[string]int{}, delay: 300 * time.Millisecond}
	p.upstream = httputil.NewSingleHostReverseProxy(target)
	p.upstream.Transport = &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 32, DisableCompression: true}
	p.upstream.ErrorLog = nil
	p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	p.URL = p.srv.URL
	return p
}

// Inject sets the faults: decide picks the fault for a request, n counting
// the requests of the same Op so far from 1 (nil passes everything); delay
// is how long Slow and SlowOnReply wait.
func (p *Proxy) Inject(delay time.Duration, decide func(op string, n int) Fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.delay, p.decide, p.decideKey = delay, decide, nil
}

// InjectKey is Inject with the request's path (/BUCKET/KEY) told too: a
// fault for one object's requests.
func (p *Proxy) InjectKey(delay time.Duration, decide func(op, path string, n int) Fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.delay, p.decide, p.decideKey = delay, nil, decide
}

// Close stops the proxy.
func (p *Proxy) Close() {
	p.srv.CloseClientConnections()
	p.srv.Close()
}

// Count is how many requests of op arrived; Done how many were answered
// with a success.
func (p *Proxy) Count(op string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.count[op]
}

// Done is how many requests of op were forwarded and succeeded.
func (p *Proxy) Done(op string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done[op]
}

type countingBody struct {
	r io.ReadCloser
	n *atomic.Int64
}

func (c countingBody) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n.Add(int64(n))
	return n, err
}

func (c countingBody) Close() error { return c.r.Close() }

type statusRecorder struct {
	http.ResponseWriter
	code    int
	served  *atomic.Int64
	cut     bool  // drop the connection after half the body
	limit   int64 // the half, once the header is written
	written int64
}

func (s *statusRecorder) WriteHeader(code int) {
	s.code = code
	if s.cut {
		n, _ := strconv.ParseInt(s.Header().Get("Content-Length"), 10, 64)
		s.limit = n / 2
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.cut && s.written+int64(len(b)) > s.limit {
		n, _ := s.ResponseWriter.Write(b[:s.limit-s.written])
		s.served.Add(int64(n))
		if f, ok := s.ResponseWriter.(http.Flusher); ok {
			f.Flush()
		}
		panic(http.ErrAbortHandler) // the connection drops mid-body
	}
	n, err := s.ResponseWriter.Write(b)
	s.written += int64(n)
	s.served.Add(int64(n))
	return n, err
}

func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) {
	op := Op(r)
	p.mu.Lock()
	p.count[op]++
	n := p.count[op]
	decide, decideKey, delay := p.decide, p.decideKey, p.delay
	p.mu.Unlock()
	f := Pass
	switch {
	case decide != nil:
		f = decide(op, n)
	case decideKey != nil:
		f = decideKey(op, r.URL.Path, n)
	}
	switch f {
	case Fail500:
		io.Copy(io.Discard, r.Body)
		writeError(w, http.StatusInternalServerError, "InternalError", "injected failure")
		return
	case Refuse501:
		io.Copy(io.Discard, r.Body)
		writeError(w, http.StatusNotImplemented, "NotImplemented", "UploadPartCopy is not implemented")
		return
	case Deny403:
		io.Copy(io.Discard, r.Body)
		writeError(w, http.StatusForbidden, "AccessDenied", "injected denial")
		return
	case Drop:
		io.CopyN(io.Discard, r.Body, 64<<10)
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				if tc, ok := c.(*net.TCPConn); ok {
					tc.SetLinger(0)
				}
				c.Close()
				return
			}
		}
		panic(http.ErrAbortHandler)
	case Slow:
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
	}
	if r.Body != nil {
		r.Body = countingBody{r.Body, &p.Sent}
	}
	rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK, served: &p.Served, cut: f == CutReply}
	var rw *etagRewriter
	switch f {
	case SlowOnReply:
		rec.ResponseWriter = delayed{w, delay}
	case WrongETag:
		rw = &etagRewriter{ResponseWriter: w}
		rec.ResponseWriter = rw
	}
	p.upstream.ServeHTTP(rec, r)
	if rw != nil {
		rw.flush()
	}
	if rec.code < 300 {
		p.mu.Lock()
		p.done[op]++
		p.mu.Unlock()
	}
}

type delayed struct {
	http.ResponseWriter
	d time.Duration
}

func (d delayed) WriteHeader(code int) {
	time.Sleep(d.d)
	d.ResponseWriter.WriteHeader(code)
}

func writeError(w http.ResponseWriter, code int, s3code, msg string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(code)
	io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>`+s3code+`</Code><Message>`+msg+`</Message><RequestId>injected</RequestId></Error>`)
}
