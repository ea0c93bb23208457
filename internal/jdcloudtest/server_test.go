package jdcloudtest_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"vmimport/internal/jdcloudtest"
	"vmimport/jdcloud"
)

// send signs a request with jdcloud.Sign, lets mutate spoil it, sends it,
// and returns the status and the server's verdict.
func send(t *testing.T, s *jdcloudtest.Server, method, path, query, body string, at time.Time, nonce string, mutate func(*http.Request)) (int, string) {
	t.Helper()
	u, _ := url.Parse(s.URL)
	u.RawPath = jdcloud.EscapePath(path)
	u.Path = path
	u.RawQuery = query
	req, _ := http.NewRequest(method, u.String(), strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	sig := jdcloud.Sign(jdcloud.SignInput{Method: method, URL: req.URL, Header: req.Header, Body: []byte(body),
		Credentials: jdcloud.Credentials{AccessKeyID: s.AccessKey, SecretAccessKey: s.SecretKey}, Region: "cn-north-1", Service: "vm",
		Time: at, Nonce: nonce})
	sig.Apply(req.Header)
	if mutate != nil {
		mutate(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	reqs := s.Requests()
	return resp.StatusCode, reqs[len(reqs)-1].SignatureError
}

func TestSignatureCheck(t *testing.T) {
	s := jdcloudtest.Start(t, jdcloudtest.Options{})
	now := time.Now()
	tasks := "/v1/regions/cn-north-1/imageTasks"
	nonce := func(i int) string { return fmt.Sprintf("6f1c2b7e-9d4a-4c1b-8e2f-%012x", i) }
	for i, tc := range []struct {
		name   string
		path   string
		query  string
		at     time.Time
		nonce  string
		mutate func(*http.Request)
		reason string // "" when accepted
	}{
		{name: "good", path: tasks, query: "taskIds.1=1&taskAction=ImportImage", at: now},
		{name: "replayed nonce", path: tasks, at: now, nonce: nonce(0), reason: "used before"},
		{name: "date too old", path: tasks, at: now.Add(-20 * time.Minute), reason: "away from the server's clock"},
		{name: "scope region is not the path's", path: "/v1/regions/cn-south-1/imageTasks", at: now, reason: "scope region cn-north-1, path region cn-south-1"},
		{name: "query changed", path: tasks, query: "taskIds.1=1", at: now, mutate: func(r *http.Request) { r.URL.RawQuery = "taskIds.1=2" }, reason: "signature mismatch"},
		{name: "header changed", path: tasks, at: now, mutate: func(r *http.Request) { r.Header.Set("Content-Type", "text/plain") }, reason: "signature mismatch"},
		{name: "host unsigned", path: tasks, at: now, mutate: func(r *http.Request) {
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), "content-type;host;", "content-type;", 1))
		}, reason: "lacks host"},
		{name: "no authorization", path: tasks, at: now, mutate: func(r *http.Request) { r.Header.Del("Authorization") }, reason: "no JDCLOUD2"},
		{name: "other key", path: tasks, at: now, mutate: func(r *http.Request) {
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), s.AccessKey, "OTHERKEY", 1))
		}, reason: "unknown access key"},
		{name: "bad nonce", path: tasks, at: now, nonce: "not-a-uuid", reason: "not a UUIDv4"},
	} {
		n := tc.nonce
		if n == "" {
			n = nonce(i)
		}
		status, reason := send(t, s, "GET", tc.path, tc.query, "", tc.at, n, tc.mutate)
		switch {
		case tc.reason == "" && (status != 200 || reason != ""):
			t.Errorf("%s: status %d, %s", tc.name, status, reason)
		case tc.reason != "" && (status != 401 || !strings.Contains(reason, tc.reason)):
			t.Errorf("%s: status %d, reason %q, want 401 and %q", tc.name, status, reason, tc.reason)
		}
	}
	// A body changed after signing.
	body := `{"architecture":"x86_64","osType":"linux","platform":"Other Linux","diskFormat":"raw","systemDiskSizeGB":40,"imageUrl":"http://x/y","imageName":"n"}`
	if status, reason := send(t, s, "POST", "/v1/regions/cn-north-1/images:import", "", body, now, nonce(20), func(r *http.Request) {
		r.Body = io.NopCloser(strings.NewReader(strings.Replace(body, "40", "50", 1)))
	}); status != 401 || !strings.Contains(reason, "signature mismatch") {
		t.Errorf("changed body: %d %s", status, reason)
	}
	if status, _ := send(t, s, "POST", "/v1/regions/cn-north-1/images:import", "", body, now, nonce(21), nil); status != 200 {
		t.Errorf("import: %d", status)
	}
	// The API's own validation.
	for i, bad := range []string{
		strings.Replace(body, "40", "45", 1), strings.Replace(body, "40", "510", 1), strings.Replace(body, `"raw"`, `"iso"`, 1),
		strings.Replace(body, `"http://x/y"`, `"ftp://x/y"`, 1), `{"osType":"linux"}`, `not json`,
	} {
		if status, _ := send(t, s, "POST", "/v1/regions/cn-north-1/images:import", "", bad, now, nonce(22+i), nil); status != 400 {
			t.Errorf("%s: status %d, want 400", bad, status)
		}
	}
}

func TestTasksAndFaults(t *testing.T) {
	s := jdcloudtest.Start(t, jdcloudtest.Options{Polls: 3})
	c, err := jdcloud.New(jdcloud.Config{Endpoint: s.URL, Region: "cn-north-1", Credentials: jdcloud.StaticCredentials(s.AccessKey, s.SecretKey, ""),
		MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	r, err := c.ImportImage(ctx, jdcloud.ImportImageRequest{Architecture: "x86_64", OSType: "linux", Platform: "CentOS", DiskFormat: "raw",
		SystemDiskSizeGB: 40, ImageURL: "http://x/y", ImageName: "n"})
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	for range 6 {
		ts, err := c.DescribeImageTasks(ctx, jdcloud.DescribeImageTasksRequest{TaskIDs: []jdcloud.TaskID{r.TaskID}})
		if err != nil || len(ts.TaskSet) != 1 || ts.TotalCount != 1 {
			t.Fatalf("%+v %v", ts, err)
		}
		tk := ts.TaskSet[0]
		seen = append(seen, fmt.Sprintf("%s:%d", tk.TaskStatus, tk.Progress))
	}
	if got := strings.Join(seen, " "); got != "pending:0 running:33 running:66 finished:100 finished:100 finished:100" {
		t.Errorf("states %s", got)
	}
	s.Inject(jdcloudtest.Fault{Op: "ImportImage", Status: 500, Times: 2})
	s.Inject(jdcloudtest.Fault{Status: 409, Code: "CONFLICT", Message: "OssRegion cn-south-1 not match current region cn-north-1"})
	// The DescribeImageTasks call takes the second fault (the first is for ImportImage only).
	_, err = c.DescribeImageTasks(ctx, jdcloud.DescribeImageTasksRequest{})
	var ae *jdcloud.APIError
	if !errors.As(err, &ae) || ae.HTTPStatus != 409 || ae.Status != "CONFLICT" || !strings.Contains(ae.Message, "not match") {
		t.Errorf("%v", err)
	}
	if _, err := c.DescribeImageTasks(ctx, jdcloud.DescribeImageTasksRequest{}); err != nil {
		t.Errorf("faults left over: %v", err)
	}
	if _, err := c.DescribeImageTasks(ctx, jdcloud.DescribeImageTasksRequest{PageSize: 5}); !errors.As(err, &ae) || ae.Status != "OUT_OF_RANGE" {
		t.Errorf("pageSize 5: %v", err)
	}
}
