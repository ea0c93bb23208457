// Package webtest gives tests a real web server on the loopback interface
// that serves a folder with Range requests (net/http's FileServer), counts
// the bytes it sends, and injects faults: responses cut mid-body, 503s,
// stalls, a server that ignores Range, a fixed status. Only tests import
// it.
package webtest

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Server serves Dir at URL. Set its fault fields before the requests they
// should affect; they are read under a lock.
type Server struct {
	URL string
	Dir string

	// Served counts the body bytes written; Requests the requests.
	Served   atomic.Int64
	Requests atomic.Int64
	ranged   atomic.Int64

	mu sync.Mutex
	// CutEvery cuts every Nth ranged response after half its body (the
	// connection is dropped); 0: never.
	CutEvery int
	// FailEvery answers every Mth request with 503; 0: never.
	FailEvery int
	// StallEvery stalls every Nth ranged response after half its body
	// for Stall, then drops it; 0: never.
	StallEvery int
	Stall      time.Duration
	// NoRanges ignores Range headers: every GET gets the whole file.
	NoRanges bool
	// Status, if set, answers every request with it.
	Status int
	// NoETag leaves the ETag out: validators are Last-Modified alone (as
	// FileServer sends it).
	NoETag bool
	// Need, if set, is a header every request must carry ("Authorization:
	// Bearer x"); others get 401.
	Need string
	// Before, if set, runs before each request is served (to change the
	// file mid-read).
	Before func(r *http.Request)
	// Redirect, if set, names the URL a request is redirected to (302
	// Found); "" serves it.
	Redirect func(r *http.Request) string
	// Trickle, if set, sends ranged bodies one byte every Trickle.
	Trickle time.Duration

	seenMu sync.Mutex
	seen   []http.Header
}

// Start serves dir until the test ends.
func Start(t testing.TB, dir string) *Server {
	t.Helper()
	s := &Server{Dir: dir}
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	s.URL = ts.URL
	return s
}

// Set changes the fault settings under the lock.
func (s *Server) Set(f func(s *Server)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

// Clear drops every fault setting.
func (s *Server) Clear() {
	s.Set(func(s *Server) {
		s.CutEvery, s.FailEvery, s.StallEvery, s.Stall = 0, 0, 0, 0
		s.NoRanges, s.Status, s.NoETag, s.Need, s.Before = false, 0, false, "", nil
		s.Redirect, s.Trickle = nil, 0
	})
}

// Headers returns the request headers seen so far.
func (s *Server) Headers() []http.Header {
	s.seenMu.Lock()
	defer s.seenMu.Unlock()
	return append([]http.Header(nil), s.seen...)
}

// Reset zeroes the counters.
func (s *Server) Reset() {
	s.Served.Store(0)
	s.Requests.Store(0)
	s.ranged.Store(0)
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := s.Requests.Add(1)
	s.seenMu.Lock()
	s.seen = append(s.seen, r.Header.Clone())
	s.seenMu.Unlock()
	s.mu.Lock()
	cut, fail, stallEvery, stall, noRanges, status, noETag, need, before := s.CutEvery, s.FailEvery, s.StallEvery, s.Stall, s.NoRanges, s.Status, s.NoETag, s.Need, s.Before
	redirect, trickle := s.Redirect, s.Trickle
	s.mu.Unlock()
	if before != nil {
		before(r)
	}
	if redirect != nil {
		if to := redirect(r); to != "" {
			http.Redirect(w, r, to, http.StatusFound)
			return
		}
	}
	if need != "" {
		k, v, _ := strings.Cut(need, ":")
		if r.Header.Get(k) != strings.TrimSpace(v) {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
	}
	if status != 0 {
		http.Error(w, http.StatusText(status), status)
		return
	}
	if fail > 0 && n%int64(fail) == 0 {
		http.Error(w, "try again", http.StatusServiceUnavailable)
		return
	}
	if !noETag {
		if fi, err := os.Stat(filepath.Join(s.Dir, filepath.FromSlash(r.URL.Path))); err == nil && fi.Mode().IsRegular() {
			// As nginx makes it: modification time and size.
			w.Header().Set("ETag", fmt.Sprintf(`"%x-%x"`, fi.ModTime().UnixNano(), fi.Size()))
		}
	}
	cw := &countingWriter{ResponseWriter: w, s: s, limit: -1, ctx: r}
	if r.Header.Get("Range") != "" {
		cw.trickle = trickle
	}
	if r.Header.Get("Range") != "" {
		if noRanges {
			r.Header.Del("Range")
		} else {
			k := s.ranged.Add(1)
			switch {
			case cut > 0 && k%int64(cut) == 0:
				cw.limit = 0 // set from Content-Length at WriteHeader
			case stallEvery > 0 && k%int64(stallEvery) == 0:
				cw.limit, cw.stall = 0, stall
			}
		}
	}
	http.FileServer(http.Dir(s.Dir)).ServeHTTP(cw, r)
}

// countingWriter counts body bytes and, when limit >= 0, cuts the body
// after half of its Content-Length.
type countingWriter struct {
	http.ResponseWriter
	s       *Server
	limit   int64 // -1: no cut
	stall   time.Duration
	written int64
	trickle time.Duration
	ctx     *http.Request
}

func (c *countingWriter) WriteHeader(code int) {
	if c.limit == 0 {
		var n int64
		fmt.Sscan(c.Header().Get("Content-Length"), &n)
		c.limit = n / 2
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *countingWriter) Write(p []byte) (int, error) {
	if c.trickle > 0 {
		// A byte at a time, flushed: a server that never stalls long
		// enough for an idle timer, and never gets anywhere.
		for i := range p {
			select {
			case <-c.ctx.Context().Done():
				return i, c.ctx.Context().Err()
			case <-time.After(c.trickle):
			}
			if _, err := c.ResponseWriter.Write(p[i : i+1]); err != nil {
				return i, err
			}
			c.written++
			c.s.Served.Add(1)
			if f, ok := c.ResponseWriter.(http.Flusher); ok {
				f.Flush()
			}
		}
		return len(p), nil
	}
	if c.limit >= 0 && c.written+int64(len(p)) > c.limit {
		k := c.limit - c.written
		n, _ := c.ResponseWriter.Write(p[:k])
		c.written += int64(n)
		c.s.Served.Add(int64(n))
		if f, ok := c.ResponseWriter.(http.Flusher); ok {
			f.Flush()
		}
		if c.stall > 0 {
			time.Sleep(c.stall)
		}
		panic(http.ErrAbortHandler) // drops the connection mid-body
	}
	n, err := c.ResponseWriter.Write(p)
	c.written += int64(n)
	c.s.Served.Add(int64(n))
	return n, err
}

// Settle returns Served once it reaches want, or after 2 s: a body is
// counted when its handler returns, which may be a moment after the client
// has read the last byte.
func (s *Server) Settle(want int64) int64 {
	for end := time.Now().Add(2 * time.Second); s.Served.Load() != want && time.Now().Before(end); {
		time.Sleep(5 * time.Millisecond)
	}
	return s.Served.Load()
}
