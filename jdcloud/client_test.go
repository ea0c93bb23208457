package jdcloud_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"vmimport/internal/jdcloudtest"
	"vmimport/jdcloud"
)

func newClient(t *testing.T, srv *jdcloudtest.Server, mod ...func(*jdcloud.Config)) (*jdcloud.Client, *[]string) {
	t.Helper()
	var mu sync.Mutex
	var logs []string
	cfg := jdcloud.Config{
		Endpoint: srv.URL, Region: "cn-north-1",
		Credentials: jdcloud.StaticCredentials(srv.AccessKey, srv.SecretKey, "test"),
		MinBackoff:  time.Millisecond, MaxBackoff: 5 * time.Millisecond, Timeout: 5 * time.Second,
		Log: func(s string) { mu.Lock(); logs = append(logs, s); mu.Unlock() },
	}
	for _, m := range mod {
		m(&cfg)
	}
	c, err := jdcloud.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c, &logs
}

func sampleImport() jdcloud.ImportImageRequest {
	return jdcloud.ImportImageRequest{
		Architecture: "x86_64", OSType: "linux", Platform: "Other Linux", DiskFormat: "qcow2", SystemDiskSizeGB: 40,
		ImageURL: "http://127.0.0.1/b/web01.qcow2?X-Amz-Signature=x", ImageName: "web01", ClientToken: "tok-1",
	}
}

var fastWait = jdcloud.WaitOptions{MinInterval: time.Millisecond, MaxInterval: 5 * time.Millisecond}

func TestImportThenWaitFinished(t *testing.T) {
	srv := jdcloudtest.Start(t, jdcloudtest.Options{Polls: 4})
	c, _ := newClient(t, srv)
	ctx := context.Background()
	req := sampleImport()
	res, err := c.ImportImage(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if res.ImageID == "" || res.TaskID == "" || res.RequestID == "" {
		t.Fatalf("result %+v", res)
	}
	imps := srv.Imports()
	body, _ := req.Body()
	if len(imps) != 1 || string(imps[0].Body) != string(body) || imps[0].Region != "cn-north-1" {
		t.Fatalf("server got %+v, want body %s", imps, body)
	}
	var seen []string
	o := fastWait
	o.Progress = func(tk jdcloud.Task) { seen = append(seen, tk.TaskStatus) }
	tk, err := c.WaitTask(ctx, res.TaskID, o)
	if err != nil {
		t.Fatal(err)
	}
	if tk.TaskStatus != jdcloud.TaskFinished || tk.Progress != 100 || tk.ImageID != res.ImageID || tk.TaskID != res.TaskID {
		t.Errorf("task %+v", tk)
	}
	if strings.Join(seen, ",") != "pending,running,running,running,finished" {
		t.Errorf("states seen %v", seen)
	}
	for _, r := range srv.Requests() {
		if r.Status != 200 || r.SignatureError != "" {
			t.Errorf("request %+v", r)
		}
	}
	// The same client token gives the same image back, not a second one.
	again, err := c.ImportImage(ctx, req)
	if err != nil || *again != (jdcloud.ImportImageResult{ImageID: res.ImageID, TaskID: res.TaskID, RequestID: again.RequestID}) {
		t.Errorf("repeat: %+v, %v", again, err)
	}
	if imps := srv.Imports(); len(imps) != 2 || !imps[1].Repeat {
		t.Errorf("repeat not seen as such: %+v", imps)
	}
}

func TestLegacyImportTaskID(t *testing.T) {
	srv := jdcloudtest.Start(t, jdcloudtest.Options{LegacyTaskID: true, Polls: 1})
	c, _ := newClient(t, srv)
	res, err := c.ImportImage(context.Background(), sampleImport())
	if err != nil {
		t.Fatal(err)
	}
	if res.TaskID != jdcloud.TaskID(srv.Imports()[0].TaskID) {
		t.Errorf("task id %q from importTaskId, want %q", res.TaskID, srv.Imports()[0].TaskID)
	}
	if _, err := c.WaitTask(context.Background(), res.TaskID, fastWait); err != nil {
		t.Error(err)
	}
}

func TestErrorAnswers(t *testing.T) {
	for _, tc := range []struct {
		name     string
		faults   []jdcloudtest.Fault
		secret   string // a wrong secret when set
		noToken  bool
		wantErr  error // nil: success
		status   int
		code     string
		requests int
	}{
		{name: "400 OUT_OF_RANGE", faults: []jdcloudtest.Fault{{Op: "ImportImage", Status: 400, Code: "OUT_OF_RANGE", Message: "SystemDiskSizeGB must be multiple of 10"}},
			wantErr: jdcloud.ErrInvalidRequest, status: 400, code: "OUT_OF_RANGE", requests: 1},
		{name: "401 wrong secret", secret: "not-the-secret", wantErr: jdcloud.ErrUnauthorized, status: 401, code: "ACCESS_ERROR", requests: 1},
		{name: "403", faults: []jdcloudtest.Fault{{Status: 403, Code: "PERMISSION_DENIED", Message: "no vm:ImportImage"}},
			wantErr: jdcloud.ErrUnauthorized, status: 403, code: "PERMISSION_DENIED", requests: 1},
		{name: "500 then success", faults: []jdcloudtest.Fault{{Status: 500, Times: 2}}, requests: 3},
		{name: "503 with Retry-After then success", faults: []jdcloudtest.Fault{{Status: 503, RetryAfter: 1}}, requests: 2},
		{name: "429 then success", faults: []jdcloudtest.Fault{{Status: 429, Code: "TOO_MANY_REQUESTS"}}, requests: 2},
		{name: "HTML 502 then success", faults: []jdcloudtest.Fault{{Status: 502, HTML: true}}, requests: 2},
		{name: "dropped connection then success", faults: []jdcloudtest.Fault{{Drop: true}}, requests: 2},
		{name: "500 every time", faults: []jdcloudtest.Fault{{Status: 500, Times: 100}}, wantErr: jdcloud.ErrServer, status: 500, code: "INTERNAL", requests: 3},
		{name: "500 without a client token is not repeated", faults: []jdcloudtest.Fault{{Status: 500}}, noToken: true,
			wantErr: jdcloud.ErrServer, status: 500, code: "INTERNAL", requests: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := jdcloudtest.Start(t, jdcloudtest.Options{})
			for _, f := range tc.faults {
				srv.Inject(f)
			}
			c, logs := newClient(t, srv, func(cfg *jdcloud.Config) {
				cfg.MaxAttempts = 3
				cfg.MaxBackoff = 2 * time.Millisecond // caps Retry-After too
				if tc.secret != "" {
					cfg.Credentials = jdcloud.StaticCredentials(srv.AccessKey, tc.secret, "test")
				}
			})
			req := sampleImport()
			if tc.noToken {
				req.ClientToken = ""
			}
			start := time.Now()
			res, err := c.ImportImage(context.Background(), req)
			if time.Since(start) > 3*time.Second {
				t.Errorf("took %s: Retry-After not capped by MaxBackoff", time.Since(start))
			}
			if n := len(srv.Requests()); n != tc.requests {
				t.Errorf("%d requests, want %d; log %q", n, tc.requests, *logs)
			}
			if tc.wantErr == nil {
				if err != nil || res.TaskID == "" {
					t.Fatalf("%+v, %v", res, err)
				}
				if len(*logs) != tc.requests-1 {
					t.Errorf("retry log %q", *logs)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("error %v, want %v", err, tc.wantErr)
			}
			var ae *jdcloud.APIError
			if !errors.As(err, &ae) || ae.HTTPStatus != tc.status || ae.Status != tc.code || ae.RequestID == "" || ae.Operation != "ImportImage" {
				t.Fatalf("API error %#v", ae)
			}
			if msg := err.Error(); strings.Contains(msg, "\n") || !strings.Contains(msg, tc.code) || !strings.Contains(msg, ae.RequestID) {
				t.Errorf("message %q", msg)
			}
			if strings.Contains(err.Error(), srv.SecretKey) || strings.Contains(err.Error(), tc.secret+"x") {
				t.Errorf("the message shows the secret: %s", err)
			}
		})
	}
}

func TestUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	c, err := jdcloud.New(jdcloud.Config{Endpoint: "http://" + addr, Region: "cn-north-1",
		Credentials: jdcloud.StaticCredentials("a", "b", ""), MaxAttempts: 2, MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.DescribeImageTasks(context.Background(), jdcloud.DescribeImageTasksRequest{TaskIDs: []jdcloud.TaskID{"1"}})
	var ne *jdcloud.NetError
	if !errors.Is(err, jdcloud.ErrNetwork) || !errors.As(err, &ne) || ne.Attempts != 2 {
		t.Fatalf("error %v", err)
	}
	var op *net.OpError
	if !errors.As(err, &op) {
		t.Errorf("the transport's error is not kept: %v", err)
	}
}

func TestCancelDuringBackoff(t *testing.T) {
	srv := jdcloudtest.Start(t, jdcloudtest.Options{})
	srv.Inject(jdcloudtest.Fault{Status: 500, Times: 100})
	c, _ := newClient(t, srv, func(cfg *jdcloud.Config) { cfg.MinBackoff, cfg.MaxBackoff = time.Hour, time.Hour })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.DescribeImageTasks(ctx, jdcloud.DescribeImageTasksRequest{})
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Fatalf("error %v after %s", err, time.Since(start))
	}
}

func TestWaitFailedTimeoutAndMissing(t *testing.T) {
	srv := jdcloudtest.Start(t, jdcloudtest.Options{Polls: 2})
	srv.FailTasks(func(im jdcloudtest.Import) string {
		if im.Fields["imageName"] == "bad" {
			return "the image's file system could not be read: no /etc/fstab\nsecond line"
		}
		return ""
	})
	c, _ := newClient(t, srv)
	ctx := context.Background()
	bad := sampleImport()
	bad.ImageName, bad.ClientToken = "bad", "tok-bad"
	good := sampleImport()
	rb, err := c.ImportImage(ctx, bad)
	if err != nil {
		t.Fatal(err)
	}
	rg, err := c.ImportImage(ctx, good)
	if err != nil {
		t.Fatal(err)
	}

	tasks, err := c.WaitTasks(ctx, []jdcloud.TaskID{rb.TaskID, rg.TaskID}, fastWait)
	var te *jdcloud.TaskError
	if !errors.Is(err, jdcloud.ErrTaskFailed) || !errors.As(err, &te) || te.Task.TaskID != rb.TaskID {
		t.Fatalf("error %v", err)
	}
	if msg := te.Error(); strings.Contains(msg, "\n") || !strings.Contains(msg, "no /etc/fstab; second line") {
		t.Errorf("message %q", msg)
	}
	if tasks[0].TaskStatus != jdcloud.TaskFailed || tasks[1].TaskStatus != jdcloud.TaskFinished {
		t.Errorf("tasks %+v", tasks)
	}

	// A wait that ends before the task does.
	slow := jdcloudtest.Start(t, jdcloudtest.Options{Polls: 1000})
	cs, _ := newClient(t, slow)
	r, err := cs.ImportImage(ctx, good)
	if err != nil {
		t.Fatal(err)
	}
	o := fastWait
	o.Timeout = 30 * time.Millisecond
	tk, err := cs.WaitTask(ctx, r.TaskID, o)
	// On a loaded machine the time-out may come before the first poll
	// that sees the task running: pending is as good.
	if !errors.Is(err, jdcloud.ErrWaitTimeout) || tk.Done() || !strings.Contains(err.Error(), "task "+string(r.TaskID)+" "+tk.TaskStatus+" at") {
		t.Fatalf("timeout: %+v, %v", tk, err)
	}

	// A task the API does not know.
	o = fastWait
	o.NotFoundGrace = 10 * time.Millisecond
	_, err = c.WaitTask(ctx, "999999", o)
	if !errors.Is(err, jdcloud.ErrInvalidRequest) || !strings.Contains(err.Error(), "999999 not found") {
		t.Fatalf("missing task: %v", err)
	}
}

// A wait goes on through server errors that outlast the client's retries.
func TestWaitRidesOutServerErrors(t *testing.T) {
	srv := jdcloudtest.Start(t, jdcloudtest.Options{Polls: 2})
	c, _ := newClient(t, srv, func(cfg *jdcloud.Config) { cfg.MaxAttempts = 2 })
	r, err := c.ImportImage(context.Background(), sampleImport())
	if err != nil {
		t.Fatal(err)
	}
	srv.Inject(jdcloudtest.Fault{Op: "DescribeImageTasks", Status: 500, Times: 5})
	var logged []string
	o := fastWait
	o.Log = func(s string) { logged = append(logged, s) }
	tk, err := c.WaitTask(context.Background(), r.TaskID, o)
	if err != nil || tk.TaskStatus != jdcloud.TaskFinished {
		t.Fatalf("%+v, %v", tk, err)
	}
	if len(logged) < 2 {
		t.Errorf("poll failures not logged: %q", logged)
	}
	// Refused credentials end the wait at once.
	bad, _ := newClient(t, srv, func(cfg *jdcloud.Config) { cfg.Credentials = jdcloud.StaticCredentials(srv.AccessKey, "wrong", "") })
	if _, err := bad.WaitTask(context.Background(), r.TaskID, fastWait); !errors.Is(err, jdcloud.ErrUnauthorized) {
		t.Errorf("wrong secret: %v", err)
	}
}

func TestImportImageChecksItsInput(t *testing.T) {
	srv := jdcloudtest.Start(t, jdcloudtest.Options{})
	c, _ := newClient(t, srv)
	req := sampleImport()
	req.ImageURL, req.SystemDiskSizeGB = "", 0
	if _, err := c.ImportImage(context.Background(), req); !errors.Is(err, jdcloud.ErrInvalidRequest) || !strings.Contains(err.Error(), "imageUrl, systemDiskSizeGB missing") {
		t.Errorf("%v", err)
	}
	req = sampleImport()
	req.ClientToken = strings.Repeat("x", 65)
	if _, err := c.ImportImage(context.Background(), req); !errors.Is(err, jdcloud.ErrInvalidRequest) {
		t.Errorf("%v", err)
	}
	if len(srv.Requests()) != 0 {
		t.Errorf("bad requests were sent")
	}
	for _, cfg := range []jdcloud.Config{
		{Endpoint: "vm.jdcloud-api.com", Region: "cn-north-1", Credentials: jdcloud.StaticCredentials("a", "b", "")},
		{Region: "", Credentials: jdcloud.StaticCredentials("a", "b", "")},
		{Region: "cn/north", Credentials: jdcloud.StaticCredentials("a", "b", "")},
		{Region: "cn-north-1"},
	} {
		if _, err := jdcloud.New(cfg); err == nil {
			t.Errorf("config %+v accepted", cfg)
		}
	}
}
