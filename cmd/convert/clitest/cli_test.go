// Package clitest runs the convert binary as a user would: the help of
// every command against golden files, every error a user meets against its
// exact one line and exit code, and a run on a terminal (a pty) that must
// show every phase of an upload in its progress bar.
package clitest

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"vmimport/internal/s3test"
	"vmimport/internal/testkit"
)

var (
	srv *s3test.Server
	bin string

	update = flag.Bool("update", false, "rewrite the golden files in testdata/ from the binary's output")
)

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(func() int {
		dir, err := os.MkdirTemp("", "convert-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		bin = filepath.Join(dir, "convert")
		if out, err := exec.Command("go", "build", "-o", bin, "vmimport/cmd/convert").CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "building convert: %v\n%s", err, out)
			return 1
		}
		return s3test.Main(m, &srv)
	}())
}

// result is one run of the binary.
type result struct {
	code           int
	stdout, stderr string
	took           time.Duration
}

// convert runs the binary in dir with args, stdin from /dev/null, and the
// environment of the local S3 server (home is a fresh folder).
func convert(t *testing.T, dir string, args ...string) result {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	if srv != nil {
		cmd.Env = srv.Env(t.TempDir())
	} else {
		cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String(), took: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return r
}

// golden compares got with testdata/name, or writes it there with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./cmd/convert/clitest -run %s -update to write it)", err, t.Name())
	}
	if got != string(want) {
		t.Errorf("%s differs from %s (go test ./cmd/convert/clitest -update rewrites it):\n%s", name, path, diff(string(want), got))
	}
}

// diff shows the first lines where a and b differ.
func diff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := range max(len(al), len(bl)) {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y {
			return fmt.Sprintf("line %d:\n  want %q\n  got  %q", i+1, x, y)
		}
	}
	return "(same lines)"
}

var commandLine = regexp.MustCompile(`^  (\S+)\s{2,}\S`)

// subcommands reads the Commands section of a help text.
func subcommands(help string) []string {
	_, rest, ok := strings.Cut(help, "\nCommands:\n")
	if !ok {
		return nil
	}
	var names []string
	for _, l := range strings.Split(rest, "\n") {
		m := commandLine.FindStringSubmatch(l)
		if m == nil {
			break
		}
		names = append(names, m[1])
	}
	return names
}

// TestHelpGolden walks the command tree from convert --help down: every
// command's --help goes to stdout, exits 0, says nothing on stderr, is the
// same as `convert help CMD`, and matches its golden file.
func TestHelpGolden(t *testing.T) {
	dir := t.TempDir()
	seen := map[string]bool{}
	var walk func(path []string)
	walk = func(path []string) {
		name := strings.Join(append([]string{"convert"}, path...), "_")
		if seen[name] {
			return
		}
		seen[name] = true
		r := convert(t, dir, append(append([]string{}, path...), "--help")...)
		if r.code != 0 || r.stderr != "" || r.stdout == "" {
			t.Errorf("%s --help: exit %d, stderr %q, %d bytes on stdout; want exit 0, the help on stdout", name, r.code, r.stderr, len(r.stdout))
			return
		}
		golden(t, filepath.Join("help", name+".txt"), r.stdout)
		if len(path) > 0 && path[0] != "help" {
			h := convert(t, dir, append([]string{"help"}, path...)...)
			if h.code != 0 || h.stdout != r.stdout {
				t.Errorf("convert help %s: exit %d, differs from %s --help", strings.Join(path, " "), h.code, name)
			}
		}
		for _, sub := range subcommands(r.stdout) {
			if sub != "help" {
				walk(append(append([]string{}, path...), sub))
			}
		}
	}
	walk(nil)
	for _, want := range []string{"convert_info", "convert_check", "convert_batch", "convert_uploads_abort", "convert_import", "convert_import-status", "convert_bench", "convert_version", "convert_completion_bash"} {
		if !seen[want] {
			t.Errorf("the help of %s was not reached from convert --help", want)
		}
	}
	// -h is --help, and `convert help` is convert --help.
	for _, args := range [][]string{{"-h"}, {"help"}} {
		if r := convert(t, dir, args...); r.code != 0 || r.stdout != convert(t, dir, "--help").stdout {
			t.Errorf("convert %s: exit %d, not the same as convert --help", strings.Join(args, " "), r.code)
		}
	}
}

// TestManAndCompletion: the man pages come from the same tree (one page a
// command), and every shell's completion script is produced.
func TestManAndCompletion(t *testing.T) {
	dir := t.TempDir()
	if r := convert(t, dir, "gen-man", "man"); r.code != 0 {
		t.Fatalf("gen-man: exit %d: %s", r.code, r.stderr)
	}
	for _, page := range []string{"convert.1", "convert-info.1", "convert-uploads-abort.1", "convert-import-status.1"} {
		b, err := os.ReadFile(filepath.Join(dir, "man", page))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(b, []byte(".SH NAME")) || !bytes.Contains(b, []byte(".SH OPTIONS")) {
			t.Errorf("%s is not a man page:\n%.300s", page, b)
		}
	}
	for _, sh := range []string{"bash", "zsh", "fish", "powershell"} {
		r := convert(t, dir, "completion", sh)
		if r.code != 0 || !strings.Contains(r.stdout, "convert") || len(r.stdout) < 1000 {
			t.Errorf("completion %s: exit %d, %d bytes: %s", sh, r.code, len(r.stdout), r.stderr)
		}
	}
	// The completion knows the commands and the values of -O.
	if r := convert(t, dir, "__complete", "i"); !strings.Contains(r.stdout, "info\t") || !strings.Contains(r.stdout, "import-status\t") {
		t.Errorf("completing 'i': %q", r.stdout)
	}
	if r := convert(t, dir, "__complete", "disk.raw", "-O", ""); !strings.Contains(r.stdout, "qcow2") {
		t.Errorf("completing -O: %q", r.stdout)
	}
}

// TestVersion: convert version and --version tell the version and the Go
// toolchain; a release build (make release) adds its build date.
func TestVersion(t *testing.T) {
	dir := t.TempDir()
	r := convert(t, dir, "version")
	if r.code != 0 || !regexp.MustCompile(`^convert \S+\n(revision: +\S+.*\n)?(committed: +\S+\n)?go: +go\S+ \w+/\w+\n$`).MatchString(r.stdout) {
		t.Errorf("version: exit %d\n%s", r.code, r.stdout)
	}
	if r := convert(t, dir, "--version"); r.code != 0 || !strings.HasPrefix(r.stdout, "convert ") || strings.Count(r.stdout, "\n") != 1 {
		t.Errorf("--version: exit %d %q", r.code, r.stdout)
	}
	rel := filepath.Join(dir, "convert-release")
	cmd := exec.Command("go", "build", "-o", rel, "-ldflags", "-X main.version=9.8.7 -X main.buildDate=2026-01-02T03:04:05Z", "vmimport/cmd/convert")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	out, err := exec.Command(rel, "version").Output()
	if err != nil || !strings.HasPrefix(string(out), "convert 9.8.7\n") || !strings.Contains(string(out), "built:      2026-01-02T03:04:05Z\n") {
		t.Errorf("release build: %v\n%s", err, out)
	}
}

// sampleDisk is a small disk with an MBR and an ext4 root that passes the
// import check, as QCOW2.
func sampleDisk(t *testing.T, dir string) string {
	t.Helper()
	testkit.Need(t, "qemu-img")
	src, err := filepath.Abs(filepath.Join("..", "..", "..", "testdata", "sample.qcow2"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "disk.qcow2")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
