package jdcloud

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestEscapePath(t *testing.T) {
	for in, want := range map[string]string{
		"/v1/regions/cn-north-1/images:import": "/v1/regions/cn-north-1/images%3Aimport",
		"/v1/regions/cn-north-1/imageTasks":    "/v1/regions/cn-north-1/imageTasks",
		"/a b/ü/*/~._-/%":                      "/a%20b/%C3%BC/%2A/~._-/%25",
		"":                                     "",
	} {
		if got := EscapePath(in); got != want {
			t.Errorf("EscapePath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCanonicalQuery(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"b=2&a=1", "a=1&b=2"},
		{"a=x+y&a=x%20y&a=a", "a=a&a=x%20y&a=x%20y"}, // '+' is a space; repeated names sort by value
		{"k", "k="},
		{"k=&j=1", "j=1&k="},
		{"taskIds.10=1&taskIds.2=2&taskIds.1=3", "taskIds.1=3&taskIds.10=1&taskIds.2=2"},
		{"q=%C3%BC*'()!", "q=%C3%BC%2A%27%28%29%21"},
		{"q=%zz", "q=%25zz"}, // a malformed escape stays as text
		{"%E9%95%9C=1&Z=2", "Z=2&%E9%95%9C=1"},
		{"&&a=1&", "a=1"},
		// UTF-16 order, as JavaScript sorts: U+FF5E sorts after U+1F600's
		// high surrogate (0xD83D) in UTF-8 order but before it in UTF-16.
		{"%F0%9F%98%80=1&%EF%BD%9E=2", "%F0%9F%98%80=1&%EF%BD%9E=2"},
	} {
		if got := CanonicalQuery(tc.in); got != tc.want {
			t.Errorf("CanonicalQuery(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	q := url.Values{"taskIds.1": {"a b"}, "taskAction": {"ImportImage"}}
	if got := EncodeQuery(q); got != "taskAction=ImportImage&taskIds.1=a%20b" {
		t.Errorf("EncodeQuery = %q", got)
	}
}

func TestCollapseSpace(t *testing.T) {
	for in, want := range map[string]string{
		"  a   b \t c  ": "a b c",
		"x\u00a0\u3000y": "x y",
		"\ufeffz":        "z",
		"x\u0085y":       "x\u0085y", // not white space to JavaScript
		"":               "",
	} {
		if got := collapseSpace(in); got != want {
			t.Errorf("collapseSpace(%q) = %q, want %q", in, got, want)
		}
	}
}

// A fixed vector, so that a change of the signer shows even where node
// and the SDK are not installed.
func TestSignVector(t *testing.T) {
	u, _ := url.Parse("https://vm.jdcloud-api.com/v1/regions/cn-north-1/imageTasks?taskAction=ImportImage&taskIds.1=1234")
	s := Sign(SignInput{
		Method: "GET", URL: u, Header: http.Header{"Accept": {"application/json"}, "Content-Type": {"application/json"}, "User-Agent": {"x"}},
		Credentials: Credentials{AccessKeyID: "JDC0123456789ABCDEF", SecretAccessKey: "0123456789abcdef0123456789abcdef"},
		Region:      "cn-north-1", Service: "vm", Time: time.Date(2024, 3, 5, 6, 7, 8, 0, time.UTC), Nonce: "3f0c2b7e-9d4a-4c1b-8e2f-000000000004",
	})
	want := "JDCLOUD2-HMAC-SHA256 Credential=JDC0123456789ABCDEF/20240305/cn-north-1/vm/jdcloud2_request, SignedHeaders=accept;content-type;host;x-jdcloud-date;x-jdcloud-nonce, Signature="
	if !strings.HasPrefix(s.Authorization, want) || len(s.Authorization) != len(want)+64 {
		t.Fatalf("authorization %s", s.Authorization)
	}
	// Taken from jdcloud-sdk-js 1.2.202 for the same request (TestSignerMatchesSDK's "tasks one id" row).
	if sig := s.Authorization[len(want):]; sig != sdkVectorSignature {
		t.Errorf("signature %s, the SDK's %s\n%s", sig, sdkVectorSignature, s.CanonicalRequest)
	}
	h := http.Header{}
	s.Apply(h)
	if h.Get("x-jdcloud-date") != "20240305T060708Z" || h.Get("x-jdcloud-nonce") != "3f0c2b7e-9d4a-4c1b-8e2f-000000000004" || h.Get("Authorization") != s.Authorization {
		t.Errorf("headers %v", h)
	}
}

func TestTaskIDAndTask(t *testing.T) {
	for in, want := range map[string]TaskID{`"abc"`: "abc", `123`: "123", `null`: "", `"12"`: "12", `1e3`: "1000"} {
		var id TaskID
		if err := json.Unmarshal([]byte(in), &id); err != nil || id != want {
			t.Errorf("%s: %q, %v", in, id, err)
		}
	}
	for _, in := range []string{`1.5`, `true`, `{}`, `[]`} {
		var id TaskID
		if err := json.Unmarshal([]byte(in), &id); err == nil {
			t.Errorf("%s accepted as %q", in, id)
		}
	}
	var tk Task
	if err := json.Unmarshal([]byte(`{"taskId":77,"taskStatus":"running","progress":"42","errorInfo":""}`), &tk); err != nil || tk.TaskID != "77" || tk.Progress != 42 {
		t.Errorf("%+v %v", tk, err)
	}
	if err := json.Unmarshal([]byte(`{"taskId":"x","progress":250.7}`), &tk); err != nil || tk.Progress != 100 {
		t.Errorf("%+v %v", tk, err)
	}
}

func TestCredentials(t *testing.T) {
	ctx := context.Background()
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	if _, err := EnvCredentials(getenv).Retrieve(ctx); err != ErrNoCredentials {
		t.Errorf("empty env: %v", err)
	}
	env[EnvAccessKeyID] = "AKID"
	if _, err := EnvCredentials(getenv).Retrieve(ctx); !errors.Is(err, ErrNoCredentials) || err == ErrNoCredentials {
		t.Errorf("half env: %v", err)
	}
	env[EnvSecretAccessKey] = "very-secret"
	c, err := EnvCredentials(getenv).Retrieve(ctx)
	if err != nil || c.AccessKeyID != "AKID" || c.SecretAccessKey != "very-secret" {
		t.Errorf("%v %v", c, err)
	}
	for _, s := range []string{c.String(), fmt.Sprintf("%v %+v %#v %s", c, c, c, c)} {
		if strings.Contains(s, "very-secret") {
			t.Errorf("the secret shows: %s", s)
		}
	}

	dir := t.TempDir()
	jdc := JDCConfigCredentials(dir)
	if _, err := jdc.Retrieve(ctx); err != ErrNoCredentials {
		t.Errorf("no file: %v", err)
	}
	// As `jdc configure add` writes it (Python's configparser).
	os.WriteFile(filepath.Join(dir, "config"), []byte("[default]\naccess_key = AKDEF\nsecret_key = SKDEF\nregion_id = cn-north-1\nendpoint = www.jdcloudapi.com\nscheme = https\ntimeout = 20\n\n"+
		"[prod]\n; a comment\nACCESS_KEY: AKPROD\nsecret_key =  SKPROD  \n"), 0o600)
	if c, err := jdc.Retrieve(ctx); err != nil || c.AccessKeyID != "AKDEF" || c.SecretAccessKey != "SKDEF" || !strings.Contains(c.Source, "profile default") {
		t.Errorf("default profile: %v %v", c, err)
	}
	os.WriteFile(filepath.Join(dir, "current"), []byte("prod"), 0o600)
	if c, err := jdc.Retrieve(ctx); err != nil || c.AccessKeyID != "AKPROD" || c.SecretAccessKey != "SKPROD" {
		t.Errorf("prod profile: %v %v", c, err)
	}
	os.WriteFile(filepath.Join(dir, "current"), []byte("nope"), 0o600)
	if _, err := jdc.Retrieve(ctx); err != ErrNoCredentials {
		t.Errorf("unknown profile: %v", err)
	}

	chain := ChainCredentials(EnvCredentials(func(string) string { return "" }), JDCConfigCredentials(t.TempDir()),
		StaticCredentials("AKAWS", "SKAWS", "AWS chain"))
	if c, err := chain.Retrieve(ctx); err != nil || c.AccessKeyID != "AKAWS" {
		t.Errorf("chain: %v %v", c, err)
	}
	if _, err := ChainCredentials(EnvCredentials(getenv), StaticCredentials("x", "y", "")).Retrieve(ctx); err != nil {
		t.Errorf("chain with env: %v", err)
	}
	delete(env, EnvSecretAccessKey)
	if _, err := ChainCredentials(EnvCredentials(getenv), StaticCredentials("x", "y", "")).Retrieve(ctx); err == nil {
		t.Errorf("a half-set environment must stop the chain")
	}
}

func FuzzCanonicalQuery(f *testing.F) {
	for _, s := range []string{"", "a=1&b=2", "taskIds.1=a%20b&taskIds.1=+", "%zz=%", "&&=&", "k=%E9%95%9C%F0%9F%98%80", "a;b=c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		c := CanonicalQuery(raw)
		if again := CanonicalQuery(c); again != c {
			t.Fatalf("not stable: %q -> %q -> %q", raw, c, again)
		}
		for _, r := range c {
			if r > 0x7e || r < 0x21 {
				t.Fatalf("%q: canonical form %q has %q", raw, c, r)
			}
		}
	})
}

func FuzzParseINI(f *testing.F) {
	f.Add([]byte("[default]\naccess_key = a\nsecret_key = b\n"))
	f.Add([]byte("[\n]\n=\n:\n[x]]\nk"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for name, sec := range parseINI(data) {
			if strings.ContainsAny(name, "\n") {
				t.Fatalf("section %q", name)
			}
			for k := range sec {
				if k != strings.ToLower(k) {
					t.Fatalf("key %q not lower-cased", k)
				}
			}
		}
	})
}

// FuzzAnswer feeds arbitrary answers to the client: it must return a
// result or an error, never panic.
func FuzzAnswer(f *testing.F) {
	f.Add(200, []byte(`{"requestId":"r","result":{"imageId":"i","taskId":"1","taskSet":[{"taskId":1,"progress":"5"}],"totalCount":"1"}}`))
	f.Add(400, []byte(`{"requestId":"r","error":{"code":"400","status":"OUT_OF_RANGE","message":"x"}}`))
	f.Add(200, []byte(`{"result":null}`))
	f.Add(502, []byte("<html>bad gateway</html>"))
	f.Add(200, []byte(`{"result":{"importTaskId":12.5}}`))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		if status < 200 || status > 599 {
			return
		}
		c, err := New(Config{Endpoint: "http://answer.test", Region: "r", Credentials: StaticCredentials("a", "b", ""), MaxAttempts: 1,
			HTTPClient: &http.Client{Transport: fixedAnswer{status, body}}})
		if err != nil {
			t.Fatal(err)
		}
		r, err := c.ImportImage(context.Background(), ImportImageRequest{Architecture: "a", OSType: "o", Platform: "p", DiskFormat: "d",
			SystemDiskSizeGB: 40, ImageURL: "u", ImageName: "n"})
		if (r == nil) == (err == nil) {
			t.Fatalf("result %v and error %v", r, err)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Fatalf("error on more than one line: %q", err)
		}
		ts, err := c.DescribeImageTasks(context.Background(), DescribeImageTasksRequest{TaskIDs: []TaskID{"1"}})
		if (ts == nil) == (err == nil) {
			t.Fatalf("tasks %v and error %v", ts, err)
		}
	})
}

// sdkVectorSignature is what jdcloud-sdk-js 1.2.202 signs for
// TestSignVector's request (node testdata/sdk.js, captured mode).
const sdkVectorSignature = "daa8822a52ab8e5e24b3584b81072960c83ec3b91f54f06a839281eb44416ee5"

// fixedAnswer answers every request with the same status and body.
type fixedAnswer struct {
	status int
	body   []byte
}

func (a fixedAnswer) RoundTrip(r *http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: a.status, Status: fmt.Sprintf("%d x", a.status), Header: http.Header{},
		Body: io.NopCloser(bytes.NewReader(a.body)), Request: r}, nil
}

// BenchmarkSign: the cost of signing an ImportImage request (it is paid
// once per attempt; the body is hashed each time).
func BenchmarkSign(b *testing.B) {
	u, _ := url.Parse("https://vm.jdcloud-api.com/v1/regions/cn-north-1/images%3Aimport")
	body := []byte(`{"architecture":"x86_64","osType":"linux","platform":"CentOS","diskFormat":"qcow2","systemDiskSizeGB":40,"imageUrl":"https://b.s3-internal.cn-north-1.jdcloud-oss.com/k?X-Amz-Signature=0123456789abcdef","imageName":"web01","clientToken":"0123456789abcdef0123456789abcdef"}`)
	in := SignInput{Method: "POST", URL: u, Header: http.Header{"Accept": {"application/json"}, "Content-Type": {"application/json"}}, Body: body,
		Credentials: Credentials{AccessKeyID: "AK", SecretAccessKey: "SK"}, Region: "cn-north-1", Service: "vm",
		Time: time.Date(2024, 3, 5, 6, 7, 8, 0, time.UTC), Nonce: "3f0c2b7e-9d4a-4c1b-8e2f-000000000004"}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		Sign(in)
	}
}
