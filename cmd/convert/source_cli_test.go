package main

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"vmimport/internal/testkit"
	"vmimport/internal/webtest"
)

// TestRemoteCLI: convert, info and check read a URL; the --source-*
// flags reach the reader; refusals are one line, exit 3, nothing written.
func TestRemoteCLI(t *testing.T) {
	src := disk(t)
	dir := t.TempDir()
	testkit.Convert(t, src, filepath.Join(dir, "web01.vmdk"), "vmdk", "-o", "subformat=streamOptimized")
	srv := webtest.Start(t, dir)
	srv.Set(func(s *webtest.Server) { s.Need = "Authorization: Bearer tok3n" })
	token := filepath.Join(t.TempDir(), "token.txt")
	os.WriteFile(token, []byte("# the source's token\nAuthorization: Bearer tok3n\n"), 0o600)
	url := srv.URL + "/web01.vmdk"
	out := filepath.Join(t.TempDir(), "out.raw")

	stdout := mustConvert(t, url, "-o", out, "--source-header", "@"+token, "--check", "off", "--json")
	if testkit.FileSHA256(t, out) != testkit.FileSHA256(t, src) {
		t.Fatal("output differs from the disk")
	}
	var res struct {
		Remote struct {
			Fetched struct{ Bytes int64 }
		}
	}
	if err := json.Unmarshal([]byte(stdout), &res); err != nil || res.Remote.Fetched.Bytes == 0 {
		t.Errorf("JSON %s: %v", stdout, err)
	}
	if strings.Contains(stdout, "tok3n") {
		t.Error("the JSON shows the header's token")
	}
	info := mustConvert(t, "info", url, "--source-header", "Authorization: Bearer tok3n")
	if !strings.Contains(info, "streamOptimized") || !strings.Contains(info, "image:             "+url) {
		t.Errorf("info:\n%s", info)
	}
	if code, _, errOut := convertCLI(t, "check", url, "--source-header", "Authorization: Bearer tok3n"); code == exitUsage || code == exitFailure {
		t.Errorf("check: exit %d\n%s", code, errOut)
	}

	for _, c := range []struct {
		name  string
		args  []string
		set   func(s *webtest.Server)
		code  int
		words string
	}{
		{"no token", nil, nil, exitBadInput, "HTTP 401 Unauthorized"},
		{"403", []string{"--source-header", "@" + token}, func(s *webtest.Server) { s.Status = http.StatusForbidden }, exitBadInput, "HTTP 403 Forbidden: check the URL and its credentials"},
		{"no ranges", []string{"--source-header", "@" + token}, func(s *webtest.Server) { s.NoRanges = true }, exitBadInput, "does not serve byte ranges"},
		{"header on a file", []string{"--source-header", "X: y"}, nil, exitUsage, "--source-header applies to remote sources"},
		{"bad header", []string{"--source-header", "Authorization Bearer tok3n"}, nil, exitUsage, "'Name: value'"},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv.Clear()
			srv.Set(func(s *webtest.Server) { s.Need = "Authorization: Bearer tok3n" })
			if c.set != nil {
				srv.Set(c.set)
			}
			from := url
			if c.name == "header on a file" {
				from = src
			}
			odir := t.TempDir()
			o := filepath.Join(odir, "out.raw")
			code, _, errOut := convertCLI(t, append([]string{from, "-o", o}, c.args...)...)
			lines := strings.Split(strings.TrimSpace(errOut), "\n")
			last := lines[len(lines)-1]
			if code != c.code || !strings.Contains(last, c.words) || strings.Contains(errOut, "tok3n") {
				t.Errorf("exit %d, stderr:\n%s", code, errOut)
			}
			noLeftovers(t, odir, o)
		})
	}
}
