package ident

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestFileThroughLinks(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	os.Mkdir(out, 0o755)
	if err := os.Symlink(out, filepath.Join(dir, "link")); err != nil {
		t.Skip(err)
	}
	a, err := File(filepath.Join(dir, "out", "x.raw"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := File(filepath.Join(dir, "link", "x.raw"))
	c, _ := File(filepath.Join(dir, "link", "..", "out", "./x.raw"))
	if a != b || a != c {
		t.Errorf("one file, three identities: %s %s %s", a, b, c)
	}
	// A folder that does not exist yet resolves as far as it exists.
	d, _ := File(filepath.Join(dir, "link", "new", "y.raw"))
	e, _ := File(filepath.Join(dir, "out", "new", "y.raw"))
	if d != e {
		t.Errorf("%s != %s", d, e)
	}
	// The name is not followed for an output, it is for what a source reads.
	os.WriteFile(filepath.Join(dir, "a.raw"), nil, 0o644)
	os.Symlink(filepath.Join(dir, "a.raw"), filepath.Join(out, "l.raw"))
	f, _ := File(filepath.Join(dir, "link", "l.raw"))
	g, _ := Target(filepath.Join(dir, "link", "l.raw"))
	h, _ := File(filepath.Join(dir, "a.raw"))
	if f == h || g != h {
		t.Errorf("File %s, Target %s, a.raw %s", f, g, h)
	}
}

func TestObject(t *testing.T) {
	same := [][2]string{
		{"http://127.0.0.1:19000", "http://127.0.0.1:19000/"},
		{"http://127.0.0.1:19000", "http://localhost:19000"},
		{"http://127.0.0.1:19000", "http://LOCALHOST.:19000//"},
		{"http://[::1]:19000", "http://127.0.0.2:19000"},
		{"https://S3.Example.com", "https://s3.example.com:443/"},
		{"https://s3.example.com", "http://s3.example.com"},
		{"https://s3.example.com", "https://b.s3.example.com"},
	}
	for _, c := range same {
		if a, b := Object(c[0], "b", "vm.ova"), Object(c[1], "b", "vm.ova"); a != b {
			t.Errorf("%s and %s: %s != %s", c[0], c[1], a, b)
		}
	}
	differ := [][2]string{
		{"http://127.0.0.1:19000", "http://127.0.0.1:19001"},
		{"https://s3.example.com", "https://s3.example.org"},
		{"https://s3.example.com/a", "https://s3.example.com/b"},
		{"http://10.0.0.1:9000", "http://127.0.0.1:9000"},
	}
	for _, c := range differ {
		if a, b := Object(c[0], "b", "k"), Object(c[1], "b", "k"); a == b {
			t.Errorf("%s and %s: both %s", c[0], c[1], a)
		}
	}
	if Object("", "b", "k") == Object("", "b", "k2") || Object("", "b", "k") == Object("", "c", "k") {
		t.Error("bucket or key ignored")
	}
}

func TestURLObjects(t *testing.T) {
	want := Object("http://127.0.0.1:19000", "b", "vm.ova")
	for _, u := range []string{
		"http://127.0.0.1:19000/b/vm.ova?X-Amz-Signature=abc",
		"http://localhost:19000/b/vm.ova",
		"http://b.localhost:19000/vm.ova",
	} {
		if !slices.Contains(URLObjects(u), want) {
			t.Errorf("%s: %v lacks %s", u, URLObjects(u), want)
		}
	}
	if len(URLObjects("s3://b/k")) != 0 || len(URLObjects("/tmp/x")) != 0 {
		t.Error("not an http URL")
	}
}

// FuzzEndpoint: any endpoint, bucket and URL: no panic, and an identity
// that does not depend on a trailing slash.
func FuzzEndpoint(f *testing.F) {
	f.Add("http://127.0.0.1:19000/", "b", "http://b.localhost:19000/vm.ova?x=1")
	f.Add("https://[::1]:443//p/", "bucket", "https://h/b/k")
	f.Fuzz(func(t *testing.T, endpoint, bucket, u string) {
		if Endpoint(endpoint, bucket) != Endpoint(strings.TrimRight(endpoint, "/")+"/", bucket) && !strings.Contains(endpoint, "?") && !strings.Contains(endpoint, "#") {
			t.Skip() // not a URL whose path ends the string
		}
		_ = URLObjects(u)
		_ = Object(endpoint, bucket, u)
	})
}
