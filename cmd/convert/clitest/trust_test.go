package clitest

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"vmimport/internal/testkit"
	"vmimport/internal/webtest"
)

// TestForeignFormatsRefused: an image of a format qemu-img reads and
// convert does not (Bochs, cloop, DMG, QCOW v1, QED, Parallels, LUKS) is
// refused in one line naming the format, exit 3, and nothing is written;
// before, a Bochs image converted as RAW (its 2,560 bytes of header and
// catalog written as the disk) and exited 0.
func TestForeignFormatsRefused(t *testing.T) {
	testkit.Need(t, "qemu-img")
	names := map[string]string{"bochs": "Bochs", "cloop": "cloop", "dmg": "DMG", "qcow": "QCOW version 1", "qed": "QED", "parallels": "Parallels", "luks": "LUKS"}
	for _, s := range testkit.Samples() {
		want, ok := names[s.QemuFormat]
		if !ok {
			continue
		}
		t.Run(s.Name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			s.Make(t, dir)
			if got := testkit.QemuFormat(t, filepath.Join(dir, s.File)); got != s.QemuFormat {
				t.Fatalf("qemu-img info says %s", got)
			}
			r := convert(t, dir, s.File, "out.raw")
			msg := strings.TrimRight(r.stderr, "\n")
			if r.code != 3 || strings.Contains(msg, "\n") || !strings.Contains(msg, want+" input is not supported") || !strings.Contains(msg, s.File) {
				t.Errorf("exit %d, stderr %q; want exit 3 and one line refusing %s input", r.code, r.stderr, want)
			}
			if _, err := os.Stat(filepath.Join(dir, "out.raw")); err == nil {
				t.Error("out.raw was written")
			}
		})
	}
}

// TestRedirectKeepsSecretsHome: the source's headers and credentials go to
// its own origin (scheme, host, port) and nowhere else. Against two real
// web servers that record what they receive: a redirect to another port of
// the same host, or to another host, is not followed unless --allow-path
// allows its URL prefix, and when it is, none of --source-header's
// headers, the URL's user info (Authorization) or the Cookie go along;
// no request ever carries a Referer (it carried the first URL, signature
// and all); a redirect within the origin keeps the headers.
func TestRedirectKeepsSecretsHome(t *testing.T) {
	dir := t.TempDir()
	web := filepath.Join(dir, "web")
	os.Mkdir(web, 0o755)
	disk := make([]byte, 1<<20)
	for i := range disk {
		disk[i] = byte(i * 7)
	}
	os.WriteFile(filepath.Join(web, "disk.raw"), disk, 0o644)
	a := webtest.Start(t, web) // the source's origin
	b := webtest.Start(t, web) // the same host, another port
	other := strings.Replace(b.URL, "127.0.0.1", "localhost", 1)
	a.Set(func(s *webtest.Server) {
		s.Need = "X-Api-Token: t0k"
		s.Redirect = func(r *http.Request) string {
			switch r.URL.Path {
			case "/port.raw":
				return b.URL + "/disk.raw"
			case "/host.raw":
				return other + "/disk.raw"
			case "/moved.raw":
				return "/disk.raw"
			}
			return ""
		}
	})
	src := func(name string) string {
		return strings.Replace(a.URL, "http://", "http://user:pa55word@", 1) + "/" + name + "?X-Amz-Signature=s1gnature"
	}
	secrets := []string{"t0k", "pa55word", "c00kie", "s1gnature"}
	run := func(args ...string) result {
		args = append(args, "--source-header", "X-Api-Token: t0k", "--source-header", "Cookie: session=c00kie", "--json")
		return convert(t, dir, args...)
	}
	for _, c := range []struct{ name, allow string }{{"port.raw", b.URL + "/"}, {"host.raw", other + "/"}} {
		b.Reset()
		r := run(src(c.name), "-o", "out.raw")
		if r.code != 3 || !strings.Contains(r.stderr, "another origin than the source") || !strings.Contains(r.stderr, "--allow-path") {
			t.Errorf("%s: exit %d\n%s", c.name, r.code, r.stderr)
		}
		if n := b.Requests.Load(); n != 0 {
			t.Errorf("%s: the other origin got %d requests without --allow-path", c.name, n)
		}
		r = run(src(c.name), "-o", "out.raw", "--allow-path", c.allow)
		if r.code != 0 {
			t.Fatalf("%s --allow-path %s: exit %d\n%s", c.name, c.allow, r.code, r.stderr)
		}
		for _, s := range secrets {
			if strings.Contains(r.stdout+r.stderr, s) {
				t.Errorf("%s: %q shows in the output", c.name, s)
			}
		}
		if got, _ := os.ReadFile(filepath.Join(dir, "out.raw")); !bytes.Equal(got, disk) {
			t.Errorf("%s: the output is not the disk", c.name)
		}
	}
	for _, h := range b.Headers() {
		for _, k := range []string{"X-Api-Token", "Authorization", "Cookie", "Referer"} {
			if h.Get(k) != "" {
				t.Errorf("the other origin received %s: %s", k, h.Get(k))
			}
		}
	}
	// Within the origin the headers stay (the server needs the token).
	a.Reset()
	if r := run(src("moved.raw"), "-o", "moved.out"); r.code != 0 {
		t.Fatalf("a redirect within the origin: exit %d\n%s", r.code, r.stderr)
	}
	for _, h := range append(a.Headers(), b.Headers()...) {
		if h.Get("Referer") != "" {
			t.Errorf("a request carried Referer: %s", h.Get("Referer"))
		}
	}
}

// TestHeaderValueNeverEchoed: a --source-header without a Name: part (a
// bare token, from the flag, an @FILE line or a manifest) is refused
// without a word of it in the message; before, the token was echoed whole.
func TestHeaderValueNeverEchoed(t *testing.T) {
	dir := t.TempDir()
	const tok = "s3cr3tT0ken"
	os.WriteFile(filepath.Join(dir, "token.txt"), []byte("# the token\n"+tok+"\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "disks.jsonl"), []byte(`{"source": "http://127.0.0.1:9/x.raw", "output": "o.raw", "source-header": "`+tok+`"}`+"\n"), 0o644)
	for _, args := range [][]string{
		{"http://127.0.0.1:9/x.raw", "-o", "o.raw", "--source-header", tok},
		{"http://127.0.0.1:9/x.raw", "-o", "o.raw", "--source-header", "Bearer " + tok},
		{"http://127.0.0.1:9/x.raw", "-o", "o.raw", "--source-header", "@token.txt"},
		{"http://127.0.0.1:9/x.raw", "-o", "o.raw", "--source-header", "Authorization: Bearer " + tok + "\r\nX: y"},
		{"batch", "disks.jsonl", "--no-state"},
	} {
		r := convert(t, dir, args...)
		if r.code != 2 || !strings.Contains(r.stderr, "'Name: value'") || strings.Contains(r.stdout+r.stderr, tok) {
			t.Errorf("%q: exit %d\n%s", args, r.code, r.stderr)
		}
	}
}

// TestQueryValuesRedacted: every query value of a source URL but the
// known harmless ones is redacted in messages and in --json (before,
// pwd=, t= and code= showed, as did any name a redaction list missed).
func TestQueryValuesRedacted(t *testing.T) {
	dir := t.TempDir()
	ws := webtest.Start(t, dir)
	ws.Set(func(s *webtest.Server) { s.Status = http.StatusForbidden })
	u := ws.URL + "/x.raw?pwd=hunter2&t=tee5ecret&code=c0de5ecret&X-Amz-Expires=600"
	os.WriteFile(filepath.Join(dir, "disks.jsonl"), []byte(`{"source": "`+u+`", "output": "o.raw"}`+"\n"), 0o644)
	for _, args := range [][]string{
		{u, "-o", "o.raw", "--json"},
		{u, "-o", "o.raw"},
		{"info", u, "--json"},
		{"batch", "disks.jsonl", "--no-state", "--json"},
	} {
		r := convert(t, dir, args...)
		out := r.stdout + r.stderr
		if r.code == 0 || !strings.Contains(out, "REDACTED") || !strings.Contains(out, "X-Amz-Expires=600") {
			t.Errorf("%q: exit %d\n%s", args, r.code, out)
		}
		for _, s := range []string{"hunter2", "tee5ecret", "c0de5ecret"} {
			if strings.Contains(out, s) {
				t.Errorf("%q: %s shows:\n%s", args, s, out)
			}
		}
	}
}

// TestTricklingSourceIsAStall: a source that sends a byte every 200 ms
// never trips the idle timer (it restarts on every byte); a range that
// brings less than --source-min-rate over its window is dropped and
// retried as a stall, and the run ends with that reason instead of going
// on for ever.
func TestTricklingSourceIsAStall(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "disk.raw"), make([]byte, 256<<10), 0o644)
	ws := webtest.Start(t, dir)
	ws.Set(func(s *webtest.Server) { s.Trickle = 200 * time.Millisecond })
	r := convert(t, dir, ws.URL+"/disk.raw", "-o", "out.raw", "--source-min-rate", "64K/1s", "--source-retries", "1")
	if r.code == 0 || !strings.Contains(r.stderr, "less than 64.0 KiB/s over 1s") || !strings.Contains(r.stderr, "dropped as a stall") || r.took > 30*time.Second {
		t.Errorf("exit %d after %s\n%s", r.code, r.took, r.stderr)
	}
	if n := ws.Requests.Load(); n != 2 {
		t.Errorf("%d requests; want the range tried twice (--source-retries 1)", n)
	}
}

// TestSourceTextEscaped: an error body of a source (an S3 store's error
// message) holding U+202E and its kin (an XML body cannot hold ESC)
// reaches the terminal escaped, in messages and in --json.
func TestSourceTextEscaped(t *testing.T) {
	dir := t.TempDir()
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			w.Header().Set("Content-Length", "1048576")
			w.Header().Set("ETag", `"e1"`)
			w.WriteHeader(http.StatusOK)
			return
		}
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InvalidRequest</Code><Message>no \u202eexe.txt\u0085 \u200fx</Message><RequestId>r1</RequestId></Error>")
	}))
	defer evil.Close()
	for _, json := range []bool{false, true} {
		args := []string{"s3://bkt/disk.raw", "-o", "o.raw", "--source-endpoint", evil.URL, "--source-path-style", "--source-retries", "0"}
		if json {
			args = append(args, "--json")
		}
		r := convert(t, dir, args...)
		out := r.stdout + r.stderr
		if r.code == 0 || !strings.Contains(out, `\u202e`) {
			t.Errorf("json %v: exit %d\n%q", json, r.code, out)
		}
		if strings.ContainsAny(out, "\u202e\u0085\u200f") {
			t.Errorf("json %v: a control character reached the terminal: %q", json, out)
		}
	}
}
