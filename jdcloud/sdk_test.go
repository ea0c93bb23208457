package jdcloud_test

import (
	"context"
	"encoding/json"
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

// roundTrip captures the request the client sends and answers it.
type roundTrip func(*http.Request) (*http.Response, error)

func (f roundTrip) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// captured is what our client put on the wire.
type captured struct {
	method, uri, host string
	header            http.Header
	body              string
}

// capture runs call with a client whose clock and nonce are fixed and whose
// transport keeps the request instead of sending it.
func capture(t *testing.T, endpoint, region, ak, sk string, date time.Time, nonce string, call func(*jdcloud.Client) error) captured {
	t.Helper()
	var got captured
	c, err := jdcloud.New(jdcloud.Config{
		Endpoint: endpoint, Region: region, Credentials: jdcloud.StaticCredentials(ak, sk, "test"),
		Now: func() time.Time { return date }, Nonce: func() string { return nonce }, UserAgent: "convert-test",
		HTTPClient: &http.Client{Transport: roundTrip(func(r *http.Request) (*http.Response, error) {
			b := []byte{}
			if r.Body != nil {
				b, _ = io.ReadAll(r.Body)
			}
			got = captured{method: r.Method, uri: r.URL.RequestURI(), host: r.URL.Host, header: r.Header.Clone(), body: string(b)}
			answer := `{"requestId":"r1","result":{"imageId":"img-1","taskId":"7","taskSet":[],"totalCount":0}}`
			return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}},
				Body: io.NopCloser(strings.NewReader(answer)), Request: r}, nil
		})},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := call(c); err != nil {
		t.Fatal(err)
	}
	return got
}

// sdkCase is one row of the oracle table: the same request made by the
// official SDK and by our client.
type sdkCase struct {
	name     string
	endpoint jdcloudtest.SDKEndpoint
	region   string
	ak, sk   string
	date     string
	nonce    string
	importer *jdcloud.ImportImageRequest        // importImage ...
	tasks    *jdcloud.DescribeImageTasksRequest // ... or imageTasks
	// headers are extra headers for the SDK to send and sign; our client
	// sends none, so such a case checks jdcloud.Sign alone.
	headers map[string]string
}

func importOpts(r jdcloud.ImportImageRequest) map[string]any {
	b, _ := json.Marshal(r)
	var m map[string]any
	json.Unmarshal(b, &m)
	return m
}

func tasksOpts(r jdcloud.DescribeImageTasksRequest) map[string]any {
	m := map[string]any{}
	m["taskAction"] = r.TaskAction
	if r.TaskAction == "" {
		m["taskAction"] = "ImportImage"
	}
	if len(r.TaskIDs) > 0 {
		ids := make([]string, len(r.TaskIDs))
		for i, id := range r.TaskIDs {
			ids[i] = string(id)
		}
		m["taskIds"] = ids
	}
	if r.TaskStatus != "" {
		m["taskStatus"] = r.TaskStatus
	}
	if r.PageNumber > 0 {
		m["pageNumber"] = r.PageNumber
	}
	if r.PageSize > 0 {
		m["pageSize"] = r.PageSize
	}
	return m
}

var vmHost = jdcloudtest.SDKEndpoint{Protocol: "https", Host: "vm.jdcloud-api.com"}

func oracleTable() []sdkCase {
	base := jdcloud.ImportImageRequest{
		Architecture: "x86_64", OSType: "linux", Platform: "CentOS", DiskFormat: "qcow2", SystemDiskSizeGB: 40,
		ImageURL:  "https://my-bucket.s3-internal.cn-north-1.jdcloud-oss.com/images/web01.qcow2?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AK%2F20240305%2Fcn-north-1%2Fs3%2Faws4_request&X-Amz-Signature=abc",
		OSVersion: "7.9", ImageName: "web01", ClientToken: "0123456789abcdef0123456789abcdef",
	}
	odd := base
	odd.ImageName = `镜像 web<01>&"q" ☃ tab	end`
	odd.Description = "line one\nline two; 100% ~/*+?#[]"
	odd.Platform = "Windows Server"
	odd.OSType = "windows"
	odd.ForceImport = true
	odd.SystemDiskSizeGB = 500
	minimal := jdcloud.ImportImageRequest{Architecture: "arm64", OSType: "linux", Platform: "Other Linux", DiskFormat: "raw",
		SystemDiskSizeGB: 50, ImageURL: "http://10.0.0.1/x", ImageName: "a"}
	return []sdkCase{
		{name: "import", endpoint: vmHost, region: "cn-north-1", date: "2024-03-05T06:07:08Z", importer: &base},
		{name: "import odd name", endpoint: vmHost, region: "cn-south-1", date: "2025-12-31T23:59:59Z", importer: &odd},
		{name: "import minimal, endpoint with port", endpoint: jdcloudtest.SDKEndpoint{Protocol: "http", Host: "127.0.0.1:8443"},
			region: "cn-east-2", date: "2024-02-29T00:00:00Z", importer: &minimal},
		{name: "import odd secret", endpoint: vmHost, region: "cn-north-1", date: "2024-03-05T06:07:08Z", importer: &base,
			ak: "AK+/=odd", sk: "s3cr3t/+= with space ☃"},
		{name: "tasks one id", endpoint: vmHost, region: "cn-north-1", date: "2024-03-05T06:07:08Z",
			tasks: &jdcloud.DescribeImageTasksRequest{TaskIDs: []jdcloud.TaskID{"1234"}}},
		{name: "tasks several ids", endpoint: vmHost, region: "cn-north-1", date: "2024-03-05T06:07:08Z",
			tasks: &jdcloud.DescribeImageTasksRequest{TaskIDs: []jdcloud.TaskID{"30", "4", "1000", "9", "12", "11", "10", "2", "3", "1", "13"}, PageSize: 20, PageNumber: 1}},
		{name: "tasks odd query", endpoint: vmHost, region: "cn-north-1", date: "2024-03-05T06:07:08Z",
			tasks: &jdcloud.DescribeImageTasksRequest{
				TaskIDs:    []jdcloud.TaskID{"a b", "ü*'()!+", "x&y=z", "%41", "~._-", "", "镜像", "tab\there", "semi;colon", "slash/q?#"},
				TaskStatus: "running now",
			}},
		{name: "extra headers with odd white space", endpoint: vmHost, region: "cn-north-1", date: "2024-03-05T06:07:08Z", importer: &base,
			headers: map[string]string{"x-jdcloud-test": "  a   b \t c  ", "X-Other": "Mixed Case\u00a0value", "x-jdcloud-security-token": "tok"}},
		{name: "tasks status filter, export action", endpoint: vmHost, region: "cn-north-1", date: "2024-03-05T06:07:08Z",
			tasks: &jdcloud.DescribeImageTasksRequest{TaskAction: "ExportImage", TaskStatus: "failed", PageSize: 100}},
	}
}

// TestSignerMatchesSDK: the official JavaScript SDK and our client make the
// same requests, with the same date and nonce: the Authorization headers
// must be equal byte for byte, and so must the path, the body and the
// signed headers.
func TestSignerMatchesSDK(t *testing.T) {
	sdk := jdcloudtest.NeedSDK(t)
	table := oracleTable()
	cases := make([]jdcloudtest.SDKCase, len(table))
	for i, tc := range table {
		if tc.ak == "" {
			table[i].ak, table[i].sk = "JDC0123456789ABCDEF", "0123456789abcdef0123456789abcdef"
		}
		table[i].nonce = fmt.Sprintf("3f0c2b7e-9d4a-4c1b-8e2f-%012d", i)
		tc = table[i]
		c := jdcloudtest.SDKCase{Name: tc.name, Region: tc.region, Endpoint: tc.endpoint, AccessKey: tc.ak, SecretKey: tc.sk,
			Date: tc.date, Nonce: tc.nonce}
		if tc.importer != nil {
			c.Op, c.Opts = "importImage", importOpts(*tc.importer)
		} else {
			c.Op, c.Opts = "imageTasks", tasksOpts(*tc.tasks)
		}
		if tc.headers != nil {
			c.Opts["x-extra-header"] = tc.headers
		}
		cases[i] = c
	}
	results := sdk.Run(t, cases)
	for i, tc := range table {
		t.Run(tc.name, func(t *testing.T) {
			want := results[i]
			date, err := time.Parse(time.RFC3339, tc.date)
			if err != nil {
				t.Fatal(err)
			}
			u, err := url.Parse(want.URL)
			if err != nil {
				t.Fatal(err)
			}
			// jdcloud.Sign as a pure function, on the request exactly as
			// the SDK made it (its query encoding, its headers).
			h := http.Header{}
			for k, v := range want.Headers {
				if k != "authorization" {
					h.Set(k, v)
				}
			}
			sig := jdcloud.Sign(jdcloud.SignInput{Method: want.Method, URL: u, Header: h, Body: []byte(want.Body),
				Credentials: jdcloud.Credentials{AccessKeyID: tc.ak, SecretAccessKey: tc.sk}, Region: tc.region, Service: jdcloud.Service,
				Time: date, Nonce: tc.nonce})
			if sig.Authorization != want.Authorization {
				t.Errorf("Sign on the SDK's request differs\nours: %s\nSDK:  %s\ncanonical request:\n%s", sig.Authorization, want.Authorization, sig.CanonicalRequest)
			}
			if tc.headers != nil {
				return
			}
			got := capture(t, tc.endpoint.Protocol+"://"+tc.endpoint.Host, tc.region, tc.ak, tc.sk, date, tc.nonce, func(c *jdcloud.Client) error {
				if tc.importer != nil {
					_, err := c.ImportImage(context.Background(), *tc.importer)
					return err
				}
				_, err := c.DescribeImageTasks(context.Background(), *tc.tasks)
				return err
			})
			if got.header.Get("Authorization") != want.Authorization {
				t.Errorf("Authorization differs\nours: %s\nSDK:  %s", got.header.Get("Authorization"), want.Authorization)
			}
			if got.body != want.Body {
				t.Errorf("body differs\nours: %s\nSDK:  %s", got.body, want.Body)
			}
			ourPath, ourQuery, _ := strings.Cut(got.uri, "?")
			if ourPath != u.EscapedPath() {
				t.Errorf("path: ours %s, SDK %s", ourPath, u.EscapedPath())
			}
			if jdcloud.CanonicalQuery(ourQuery) != jdcloud.CanonicalQuery(u.RawQuery) {
				t.Errorf("query: ours %s, SDK %s", ourQuery, u.RawQuery)
			}
			if got.method != want.Method || got.host != u.Host {
				t.Errorf("method/host: ours %s %s, SDK %s %s", got.method, got.host, want.Method, u.Host)
			}
			for _, h := range []string{"accept", "content-type", "x-jdcloud-date", "x-jdcloud-nonce"} {
				if got.header.Get(h) != want.Headers[h] {
					t.Errorf("header %s: ours %q, SDK %q", h, got.header.Get(h), want.Headers[h])
				}
			}
			if tc.importer != nil && !strings.Contains(ourPath, "images%3Aimport") {
				t.Errorf("path %s: images:import must go out as images%%3Aimport", ourPath)
			}
			if !strings.HasPrefix(want.Authorization, "JDCLOUD2-HMAC-SHA256 Credential="+tc.ak+"/") {
				t.Errorf("SDK authorization %s", want.Authorization)
			}
		})
	}
}

// TestServerAcceptsSDK: requests the SDK signs and sends for real are
// accepted by the local API server's own signature check, and a wrong
// secret is refused: the server's check agrees with the SDK too.
func TestServerAcceptsSDK(t *testing.T) {
	sdk := jdcloudtest.NeedSDK(t)
	srv := jdcloudtest.Start(t, jdcloudtest.Options{Polls: 1})
	u, _ := url.Parse(srv.URL)
	ep := jdcloudtest.SDKEndpoint{Protocol: "http", Host: u.Host}
	req := importOpts(jdcloud.ImportImageRequest{Architecture: "x86_64", OSType: "linux", Platform: "Ubuntu", DiskFormat: "raw",
		SystemDiskSizeGB: 60, ImageURL: "http://oss.local/b/k", ImageName: "镜像 <sdk> & co", ClientToken: "sdk-token"})
	res := sdk.Run(t, []jdcloudtest.SDKCase{
		{Name: "import", Op: "importImage", Opts: req, Region: "cn-north-1", Endpoint: ep, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, Send: true},
		{Name: "tasks", Op: "imageTasks", Opts: map[string]any{"taskAction": "ImportImage", "taskIds": []string{"1001", "x y"}}, Region: "cn-north-1",
			Endpoint: ep, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, Send: true},
		{Name: "wrong secret", Op: "imageTasks", Opts: map[string]any{"taskIds": []string{"1001"}}, Region: "cn-north-1",
			Endpoint: ep, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey + "x", Send: true},
	})
	if res[0].Status != 200 || res[1].Status != 200 {
		for _, r := range srv.Requests() {
			t.Logf("%+v", r)
		}
		t.Fatalf("SDK requests refused: %d %s / %d %s", res[0].Status, res[0].Answer, res[1].Status, res[1].Answer)
	}
	if res[2].Status != 401 {
		t.Errorf("a wrong secret: status %d, want 401", res[2].Status)
	}
	imps := srv.Imports()
	if len(imps) != 1 || imps[0].Fields["imageName"] != "镜像 <sdk> & co" {
		t.Fatalf("imports %+v", imps)
	}
	var ans struct {
		Result struct {
			TaskSet []struct {
				TaskID     json.Number `json:"taskId"`
				TaskStatus string      `json:"taskStatus"`
			} `json:"taskSet"`
		} `json:"result"`
	}
	if err := json.Unmarshal(res[1].Answer, &ans); err != nil || len(ans.Result.TaskSet) != 1 || ans.Result.TaskSet[0].TaskID.String() != imps[0].TaskID {
		t.Errorf("tasks answer %s (%v)", res[1].Answer, err)
	}
}
