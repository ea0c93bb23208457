// Package jdcloudtest is a local stand-in for the target cloud's OpenAPI
// (the vm service's ImportImage and DescribeImageTasks) for tests: a real
// net/http server on 127.0.0.1 that checks the JDCLOUD2-HMAC-SHA256
// signature of every request with its own implementation (not the jdcloud
// package's), validates the import body as the API documents it, answers
// a repeated clientToken with the first result, walks each task through
// pending -> running -> finished (or failed), and can be told to serve
// errors: 400 OUT_OF_RANGE, 401, 500 then success, dropped connections.
//
// It also drives the official JavaScript SDK (see SDK) so that tests can
// prove the jdcloud package's signer, and this server's check, against it.
// Only tests import this package.
package jdcloudtest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Options configure a Server.
type Options struct {
	// AccessKey and SecretKey are the pair the server accepts (default: a
	// fixed test pair, see the fields of Server).
	AccessKey, SecretKey string
	// Polls is how many DescribeImageTasks answers a task takes to end:
	// pending on the first, running with a rising progress, then finished
	// (or failed) (default 3).
	Polls int
	// MaxSkew is how far x-jdcloud-date may be from the server's clock
	// (default 15 minutes).
	MaxSkew time.Duration
	// LegacyTaskID answers ImportImage with an integer importTaskId, as an
	// older API document shows, instead of the SDK's string taskId.
	LegacyTaskID bool
}

// Server is a running stand-in. Its methods are safe for concurrent use.
type Server struct {
	// URL is the endpoint: http://127.0.0.1:PORT.
	URL       string
	AccessKey string
	SecretKey string

	opts Options
	srv  *httptest.Server

	mu       sync.Mutex
	seq      int
	imports  []Import
	requests []Request
	tasks    map[string]*task
	order    []string
	tokens   map[string]int // clientToken -> index in imports
	nonces   map[string]bool
	faults   []Fault
	failTask func(Import) string
	spell    func(status string) string
}

// Import is one ImportImage request the server accepted.
type Import struct {
	Region string
	// Body is the request body as received.
	Body []byte
	// Fields is Body decoded.
	Fields      map[string]any
	ImageID     string
	TaskID      string
	ClientToken string
	// Repeat is set when the clientToken had been seen: the answer was
	// the first request's.
	Repeat bool
}

// Request is a request the server saw, with its verdict.
type Request struct {
	Method string
	// RawPath is the path as it came on the wire (escaped).
	RawPath  string
	RawQuery string
	Op       string // ImportImage, DescribeImageTasks, or "" (unknown)
	Status   int
	// SignatureError says why the signature was refused ("" when it was
	// accepted, or not checked because a fault was served first).
	SignatureError string
	Nonce          string
}

// Fault is an error answer the server serves instead of the real one.
type Fault struct {
	// Op selects the operation (ImportImage, DescribeImageTasks; "" for
	// any).
	Op string
	// Status is the HTTP status (400, 401, 500, ...); 0 with Drop.
	Status int
	// Code is error.status (default: OUT_OF_RANGE for 400, ACCESS_ERROR
	// for 401 and 403, INTERNAL for 5xx).
	Code    string
	Message string
	// Times is how many requests get the fault (default 1).
	Times int
	// Drop closes the connection without an answer.
	Drop bool
	// RetryAfter, when positive, is sent as a Retry-After header (seconds).
	RetryAfter int
	// HTML serves a non-JSON error page, as a proxy in front of the API
	// would.
	HTML bool
}

type task struct {
	id        string
	imageID   string
	imageName string
	imageURL  string
	polls     int
	failWith  string
	created   time.Time
	finished  time.Time
	status    string
	progress  int
}

// Default test credentials.
const (
	TestAccessKey = "JDCTESTACCESSKEY0001"
	TestSecretKey = "jdc-test-secret-0123456789abcdef"
)

// New starts a server. Close it when done.
func New(o Options) *Server {
	if o.AccessKey == "" {
		o.AccessKey = TestAccessKey
	}
	if o.SecretKey == "" {
		o.SecretKey = TestSecretKey
	}
	if o.Polls <= 0 {
		o.Polls = 3
	}
	if o.MaxSkew <= 0 {
		o.MaxSkew = 15 * time.Minute
	}
	s := &Server{
		AccessKey: o.AccessKey, SecretKey: o.SecretKey, opts: o,
		tasks: map[string]*task{}, tokens: map[string]int{}, nonces: map[string]bool{},
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL
	return s
}

// Start starts a server for a test and closes it at the test's end.
func Start(t testing.TB, o Options) *Server {
	s := New(o)
	t.Cleanup(s.Close)
	return s
}

// Close stops the server.
func (s *Server) Close() { s.srv.Close() }

// Inject queues a fault: the next matching requests get it instead of
// their answer, in the order the faults were queued.
func (s *Server) Inject(f Fault) {
	if f.Times <= 0 {
		f.Times = 1
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, f)
}

// SpellStatus makes DescribeImageTasks answer fn(status) for a task's
// status (pending, running, finished, failed): another case, another
// word, a word the client does not know. nil: the API's own words.
func (s *Server) SpellStatus(fn func(status string) string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.spell = fn
}

// FailTasks makes the tasks of the next imports fail: fn returns the
// errorInfo a task ends with ("" lets it finish). nil lets all finish.
func (s *Server) FailTasks(fn func(Import) string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failTask = fn
}

// Imports lists the ImportImage requests accepted, in order.
func (s *Server) Imports() []Import {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.imports)
}

// Requests lists every request seen, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// Task is a task's state as DescribeImageTasks last answered it.
type Task struct {
	ID, Status, ImageID string
	Progress, Polls     int
}

// Task reports a task.
func (s *Server) Task(id string) (Task, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.tasks[id]
	if !ok {
		return Task{}, false
	}
	return Task{ID: t.id, Status: t.status, ImageID: t.imageID, Progress: t.progress, Polls: t.polls}, true
}

var (
	importPath = regexp.MustCompile(`^/v1/regions/([a-z0-9-]+)/images:import$`)
	tasksPath  = regexp.MustCompile(`^/v1/regions/([a-z0-9-]+)/imageTasks$`)
)

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	rawPath, _, _ := strings.Cut(r.RequestURI, "?")
	rec := Request{Method: r.Method, RawPath: rawPath, RawQuery: r.URL.RawQuery, Nonce: r.Header.Get("x-jdcloud-nonce")}
	var region string
	switch {
	case r.Method == http.MethodPost && importPath.MatchString(r.URL.Path):
		rec.Op, region = "ImportImage", importPath.FindStringSubmatch(r.URL.Path)[1]
	case r.Method == http.MethodGet && tasksPath.MatchString(r.URL.Path):
		rec.Op, region = "DescribeImageTasks", tasksPath.FindStringSubmatch(r.URL.Path)[1]
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	rid := fmt.Sprintf("req%06d", s.seq)
	answer := func(status int, v any) {
		rec.Status = status
		s.requests = append(s.requests, rec)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("x-jdcloud-request-id", rid)
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(v)
	}
	fail := func(status int, code, msg string) {
		answer(status, map[string]any{"requestId": rid, "error": map[string]any{"code": status, "status": code, "message": msg}})
	}
	if f, ok := s.fault(rec.Op); ok {
		switch {
		case f.Drop:
			rec.Status = -1
			s.requests = append(s.requests, rec)
			if hj, ok := w.(http.Hijacker); ok {
				if conn, _, err := hj.Hijack(); err == nil {
					conn.Close()
					return
				}
			}
			panic(http.ErrAbortHandler)
		case f.HTML:
			rec.Status = f.Status
			s.requests = append(s.requests, rec)
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(f.Status)
			fmt.Fprintf(w, "<html><body><h1>%d %s</h1>\n<p>upstream unavailable</p></body></html>\n", f.Status, http.StatusText(f.Status))
			return
		}
		if f.RetryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(f.RetryAfter))
		}
		fail(f.Status, f.Code, f.Message)
		return
	}
	if reason := s.verify(r, body, region); reason != "" {
		rec.SignatureError = reason
		msg := "sign result is not same [gw]"
		if first, _, _ := strings.Cut(reason, ";"); !strings.HasPrefix(reason, "signature mismatch") {
			msg = first
		}
		fail(http.StatusUnauthorized, "ACCESS_ERROR", msg)
		return
	}
	switch rec.Op {
	case "ImportImage":
		s.importImage(region, body, rid, answer, fail)
	case "DescribeImageTasks":
		s.imageTasks(r, rid, answer, fail)
	default:
		fail(http.StatusNotFound, "NOT_FOUND", fmt.Sprintf("no API %s %s", r.Method, rawPath))
	}
}

// fault takes the next queued fault for op, if any.
func (s *Server) fault(op string) (Fault, bool) {
	for i := range s.faults {
		f := &s.faults[i]
		if f.Op != "" && f.Op != op {
			continue
		}
		out := *f
		f.Times--
		if f.Times == 0 {
			s.faults = slices.Delete(s.faults, i, i+1)
		}
		if out.Code == "" {
			switch {
			case out.Status == 400:
				out.Code = "OUT_OF_RANGE"
			case out.Status == 401 || out.Status == 403:
				out.Code = "ACCESS_ERROR"
			case out.Status >= 500:
				out.Code = "INTERNAL"
			default:
				out.Code = "FAILED_PRECONDITION"
			}
		}
		if out.Message == "" {
			out.Message = http.StatusText(out.Status)
		}
		return out, true
	}
	return Fault{}, false
}

var (
	architectures = []string{"x86_64", "arm64", "i386"}
	osTypes       = []string{"linux", "windows"}
	diskFormats   = []string{"qcow2", "vhd", "vmdk", "raw"}
)

func (s *Server) importImage(region string, body []byte, rid string, answer func(int, any), fail func(int, string, string)) {
	var f map[string]any
	if err := json.Unmarshal(body, &f); err != nil {
		fail(400, "INVALID_ARGUMENT", "body is not JSON: "+err.Error())
		return
	}
	str := func(k string) string { v, _ := f[k].(string); return v }
	for _, k := range []string{"architecture", "osType", "platform", "diskFormat", "imageUrl", "imageName"} {
		if str(k) == "" {
			fail(400, "INVALID_ARGUMENT", k+" is required")
			return
		}
	}
	size, ok := f["systemDiskSizeGB"].(float64)
	switch {
	case !ok:
		fail(400, "INVALID_ARGUMENT", "systemDiskSizeGB is required")
		return
	case size < 40 || size > 500:
		fail(400, "OUT_OF_RANGE", "SystemDiskSizeGB must be between 40 and 500")
		return
	case size != float64(int(size)) || int(size)%10 != 0:
		fail(400, "OUT_OF_RANGE", "SystemDiskSizeGB must be multiple of 10")
		return
	}
	for _, c := range []struct {
		k    string
		vals []string
	}{{"architecture", architectures}, {"osType", osTypes}, {"diskFormat", diskFormats}} {
		if !slices.Contains(c.vals, str(c.k)) {
			fail(400, "INVALID_ARGUMENT", fmt.Sprintf("%s %q is not one of %s", c.k, str(c.k), strings.Join(c.vals, ", ")))
			return
		}
	}
	if u := str("imageUrl"); !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
		fail(400, "INVALID_ARGUMENT", "imageUrl must be an http(s) link")
		return
	}
	tok := str("clientToken")
	if len(tok) > 64 {
		fail(400, "INVALID_ARGUMENT", "clientToken is longer than 64 characters")
		return
	}
	im := Import{Region: region, Body: body, Fields: f, ClientToken: tok}
	if i, ok := s.tokens[tok]; ok && tok != "" {
		first := s.imports[i]
		im.ImageID, im.TaskID, im.Repeat = first.ImageID, first.TaskID, true
	} else {
		n := len(s.tasks) + 1
		im.ImageID = fmt.Sprintf("img-%08d", n)
		im.TaskID = strconv.Itoa(1000 + n)
		t := &task{id: im.TaskID, imageID: im.ImageID, imageName: str("imageName"), imageURL: str("imageUrl"),
			created: time.Now().UTC(), status: "pending"}
		if s.failTask != nil {
			t.failWith = s.failTask(im)
		}
		s.tasks[t.id] = t
		s.order = append(s.order, t.id)
		if tok != "" {
			s.tokens[tok] = len(s.imports)
		}
	}
	s.imports = append(s.imports, im)
	result := map[string]any{"imageId": im.ImageID}
	if s.opts.LegacyTaskID {
		n, _ := strconv.Atoi(im.TaskID)
		result["importTaskId"] = n
	} else {
		result["taskId"] = im.TaskID
	}
	answer(200, map[string]any{"requestId": rid, "result": result})
}

func (s *Server) imageTasks(r *http.Request, rid string, answer func(int, any), fail func(int, string, string)) {
	q := r.URL.Query()
	if a := q.Get("taskAction"); a != "" && a != "ImportImage" && a != "ExportImage" {
		fail(400, "INVALID_ARGUMENT", "taskAction must be ImportImage or ExportImage")
		return
	}
	if ps := q.Get("pageSize"); ps != "" {
		n, err := strconv.Atoi(ps)
		if err != nil || n < 10 || n > 100 {
			fail(400, "OUT_OF_RANGE", "pageSize must be between 10 and 100")
			return
		}
	}
	var ids []string
	for i := 1; ; i++ {
		v, ok := q[fmt.Sprintf("taskIds.%d", i)]
		if !ok {
			break
		}
		ids = append(ids, v...)
	}
	if len(ids) == 0 {
		ids = s.order
	}
	set := []map[string]any{}
	for _, id := range ids {
		t, ok := s.tasks[id]
		if !ok || (q.Get("taskAction") == "ExportImage") {
			continue
		}
		s.advance(t)
		n, _ := strconv.Atoi(t.id)
		e := map[string]any{
			"taskId": n, "action": "ImportImage", "taskStatus": t.status, "progress": t.progress,
			"imageId": t.imageID, "imageName": t.imageName, "imageUrl": t.imageURL,
			"createdTime": t.created.Format(time.RFC3339), "errorInfo": "", "message": "",
		}
		if !t.finished.IsZero() {
			e["finishedTime"] = t.finished.Format(time.RFC3339)
		}
		if t.status == "failed" {
			e["errorInfo"] = t.failWith
		}
		if s.spell != nil {
			e["taskStatus"] = s.spell(t.status)
		}
		set = append(set, e)
	}
	answer(200, map[string]any{"requestId": rid, "result": map[string]any{"taskSet": set, "totalCount": len(set)}})
}

// advance moves a task one poll further.
func (s *Server) advance(t *task) {
	if t.status == "finished" || t.status == "failed" {
		return
	}
	t.polls++
	switch {
	case t.polls <= 1:
		t.status, t.progress = "pending", 0
	case t.polls <= s.opts.Polls:
		t.status, t.progress = "running", (t.polls-1)*100/s.opts.Polls
	case t.failWith != "":
		t.status, t.finished = "failed", time.Now().UTC()
	default:
		t.status, t.progress, t.finished = "finished", 100, time.Now().UTC()
	}
}
