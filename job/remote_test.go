package job

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"vmimport/internal/testkit"
	"vmimport/internal/webtest"
	"vmimport/reader/remote"
)

// remoteFixture serves a compressed QCOW2 of the test disk.
func remoteFixture(t *testing.T) (srv *webtest.Server, name, want string) {
	src := testDisk(t)
	dir := t.TempDir()
	testkit.Convert(t, src, filepath.Join(dir, "web01.qcow2"), "qcow2", "-c")
	return webtest.Start(t, dir), "web01.qcow2", testkit.FileSHA256(t, src)
}

// nothingLeft fails when dir holds anything but the files in keep.
func nothingLeft(t *testing.T, dir string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		t.Errorf("left behind: %s", e.Name())
	}
}

// TestRemoteSource: a URL source converts to the bytes of the disk, with
// the version read and the bytes fetched in the result, and with the
// URL's credentials out of the spec and the result.
func TestRemoteSource(t *testing.T) {
	srv, name, want := remoteFixture(t)
	srv.Set(func(s *webtest.Server) { s.Need = "Authorization: Basic dXNlcjpodW50ZXIy" }) // user:hunter2
	out := filepath.Join(t.TempDir(), "out.raw")
	u := strings.Replace(srv.URL, "http://", "http://user:hunter2@", 1) + "/" + name + "?sig=s3cret"
	spec := Spec{Source: u, Output: out, Check: "off"}
	spec.SplitSourceCredentials()
	if strings.Contains(spec.Source, "hunter2") || len(spec.Remote.Headers) != 1 {
		t.Fatalf("credentials stay in the source: %q", spec.Source)
	}
	b, _ := json.Marshal(spec)
	if strings.Contains(string(b), "hunter2") || strings.Contains(string(b), "Basic") {
		t.Errorf("the spec marshals a secret: %s", b)
	}
	res, err := Run(context.Background(), spec, Env{})
	if err != nil {
		t.Fatal(err)
	}
	if got := testkit.FileSHA256(t, out); got != want {
		t.Fatal("output differs from the disk")
	}
	r := res.Remote
	if r == nil || r.Source.URL != srv.URL+"/"+name || r.Source.ETag == "" || r.Fetched.Bytes == 0 || r.Fetched.Bytes != srv.Served.Load() {
		t.Fatalf("remote result %+v, served %d", r, srv.Served.Load())
	}
	rb, _ := json.Marshal(res)
	if strings.Contains(string(rb), "s3cret") || strings.Contains(string(rb), "hunter2") {
		t.Errorf("the result shows a secret: %s", rb)
	}
	if res.Source.Format != "qcow2" || !strings.Contains(res.Source.Path, "sig=REDACTED") {
		t.Errorf("source info %+v", res.Source)
	}
	// The identity a batch compares is the one the run read.
	id, err := IdentifySource(context.Background(), &spec)
	if err != nil || id.Same(r.SourceID()) != nil {
		t.Errorf("IdentifySource = %+v, %v; the run read %+v", id, err, r.SourceID())
	}
}

// TestRemoteRefusals: a server that refuses, serves no ranges, or whose
// file changes mid-read fails the job in one line, with nothing written.
func TestRemoteRefusals(t *testing.T) {
	srv, name, _ := remoteFixture(t)
	path := filepath.Join(srv.Dir, name)
	var requests atomic.Int64
	for _, c := range []struct {
		name  string
		set   func(s *webtest.Server)
		input bool // an InputError (the source could not be opened)
		want  error
		words string
	}{
		{"403", func(s *webtest.Server) { s.Status = http.StatusForbidden }, true, remote.ErrStatus, "HTTP 403 Forbidden"},
		{"no ranges", func(s *webtest.Server) { s.NoRanges = true }, true, remote.ErrNoRanges, "does not serve byte ranges"},
		{"changed mid-read", func(s *webtest.Server) {
			requests.Store(0)
			s.Before = func(r *http.Request) {
				if requests.Add(1) == 3 {
					later := time.Now().Add(time.Hour)
					os.Chtimes(path, later, later)
				}
			}
		}, false, remote.ErrChanged, "changed while it was read"},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv.Clear()
			srv.Set(c.set)
			dir := t.TempDir()
			res, err := Run(context.Background(), Spec{Source: srv.URL + "/" + name, Output: filepath.Join(dir, "out.raw"), Check: "off", Remote: RemoteSpec{Retries: 1}}, Env{})
			var ie *InputError
			if !errors.Is(err, c.want) || errors.As(err, &ie) != c.input || !strings.Contains(err.Error(), c.words) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %v", err)
			}
			nothingLeft(t, dir)
			if res.Remote == nil {
				t.Error("no remote result on failure")
			}
		})
	}
}

// TestRemoteSpec: remote settings are checked with the rest, and URL
// sources name their outputs.
func TestRemoteSpec(t *testing.T) {
	for _, c := range []struct {
		spec Spec
		want string
	}{
		{Spec{Source: "a.img", Output: "b.raw", Remote: RemoteSpec{Headers: []string{"X: y"}}}, "apply to remote sources"},
		{Spec{Source: "https://h/a.img", Output: "b.raw", Remote: RemoteSpec{Headers: []string{"Bad Name: token123"}}}, "'Name: value'"},
		{Spec{Source: "https://h/a.img", Output: "b.raw", Remote: RemoteSpec{Headers: []string{"X: a\nb"}}}, "'Name: value'"},
		{Spec{Source: "https://h/a.img", Output: "b.raw", Remote: RemoteSpec{Retries: 1000}}, "--source-retries"},
		{Spec{Source: "s3://bkt/k.vmdk", Output: "s3://bkt/k.vmdk"}, "the output is the source object"},
		{Spec{Source: "s3://bkt/", Output: "x.raw"}, "the key of an object"},
		{Spec{Source: "s3://bkt/k.vmdk", Output: "b.raw", Remote: RemoteSpec{Headers: []string{"X: y"}}}, "applies to http(s)://"},
		{Spec{Source: "https://h/a.img", Output: "b.raw", Remote: RemoteSpec{Headers: []string{"Authorization: Bearer t"}}}, ""},
	} {
		err := c.spec.Validate()
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%+v: %v, want %q", c.spec, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "token123") {
			t.Errorf("a header's value is echoed: %v", err)
		}
	}
	for src, want := range map[string]string{
		"https://h/exports/web%2001.vmdk?X-Amz-Signature=x": "s3://out/web 01.qcow2",
		"s3://in/dir/db01.vhdx":                             "s3://out/db01.qcow2",
		"/srv/app.ova":                                      "s3://out/app.qcow2",
	} {
		s := Spec{Source: src, Output: "s3://out/"}
		b, k, err := s.Destination()
		if err != nil || "s3://"+b+"/"+k != want {
			t.Errorf("Destination of %s = %s/%s, %v; want %s", src, b, k, err, want)
		}
	}
	s := Spec{Source: "https://u:p@h/x.vmdk?sig=1#f"}
	if n := s.SourceName(); n != "https://h/x.vmdk" {
		t.Errorf("SourceName = %q", n)
	}
}
