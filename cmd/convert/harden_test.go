package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"vmimport/internal/testkit"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// cliBinary builds the command once for the tests that need a real process
// (signals, pipes, stdout redirected to a file).
func cliBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "convert-harden-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "convert")
		if out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput(); err != nil {
			binErr = errors.New(string(out))
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// TestSameFileRefused: the output may not be the input, nor a file the
// input reads, however it is named; the input stays as it was.
func TestSameFileRefused(t *testing.T) {
	testkit.Need(t, "qemu-img")
	dir := t.TempDir()
	base := testkit.Convert(t, disk(t), filepath.Join(dir, "base.qcow2"), "qcow2")
	top := filepath.Join(dir, "top.qcow2")
	testkit.QemuImg(t, "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top)
	os.Symlink(base, filepath.Join(dir, "link.qcow2"))
	os.Link(base, filepath.Join(dir, "hard.qcow2"))
	before := testkit.FileSHA256(t, base)
	for _, c := range []struct{ src, out string }{
		{base, base},
		{base, filepath.Join(dir, "link.qcow2")},
		{base, filepath.Join(dir, "hard.qcow2")},
		{top, base},
		{filepath.Join(dir, "link.qcow2"), filepath.Join(dir, "hard.qcow2")},
	} {
		code, _, errOut := convertCLI(t, c.src, "-o", c.out, "--allow-backing", "--progress", "never")
		if code != exitUsage || !strings.Contains(errOut, "same device and inode") {
			t.Errorf("convert %s -o %s: exit %d: %s", c.src, c.out, code, errOut)
		}
	}
	if testkit.FileSHA256(t, base) != before {
		t.Fatal("the input changed")
	}
	if m, _ := filepath.Glob(filepath.Join(dir, ".*.partial")); len(m) > 0 {
		t.Errorf("temporary files left: %v", m)
	}
	// stdout appended to the input itself.
	f, err := os.OpenFile(base, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(cliBinary(t), base, "-o", "-", "--progress", "never")
	cmd.Stdout = f
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitUsage || !strings.Contains(stderr.String(), "stdout is") {
		t.Errorf("-o - >> input: %v: %s", err, stderr.String())
	}
	if testkit.FileSHA256(t, base) != before {
		t.Fatal("the input changed")
	}
}

// TestHangupCleansUp: SIGHUP (the terminal went away) stops a run like
// SIGINT: exit 130, nothing under the output name, no temporary file.
func TestHangupCleansUp(t *testing.T) {
	bin := cliBinary(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "big.raw")
	f, _ := os.Create(src)
	block := bytes.Repeat([]byte("hang up on me "), 1<<20/14+1)[:1<<20]
	for range 512 {
		f.Write(block)
	}
	f.Close()
	for _, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGTERM} {
		out := filepath.Join(dir, "out.raw")
		cmd := exec.Command(bin, src, "-o", out, "--workers", "1", "--progress", "never", "--check", "off")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for !testkit.Writing(cmd.Process.Pid, dir, "big.raw") {
			if time.Now().After(deadline) {
				t.Fatal("the conversion never started writing")
			}
			time.Sleep(5 * time.Millisecond)
		}
		cmd.Process.Signal(sig)
		err := cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != exitCancelled {
			t.Errorf("%v: %v (stderr %q); want exit %d", sig, err, stderr.String(), exitCancelled)
		}
		noLeftovers(t, dir, out)
	}
}

// TestBrokenPipe: a reader that closes stdout early gets exit 141 and one
// line saying the image it got is cut short.
func TestBrokenPipe(t *testing.T) {
	bin := cliBinary(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "big.raw")
	b := bytes.Repeat([]byte("pipe "), 64<<20/5)
	if err := os.WriteFile(src, b, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, src, "-o", "-", "--progress", "never", "--check", "off")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	r, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	if _, err := r.Read(buf); err != nil {
		t.Fatal(err)
	}
	r.Close()
	err = cmd.Wait()
	var ee *exec.ExitError
	msg := strings.TrimSpace(stderr.String())
	if !errors.As(err, &ee) || ee.ExitCode() != exitPipe || !strings.Contains(msg, "closed the pipe before the image was complete") || strings.Count(msg, "\n") != 0 {
		t.Fatalf("exit %v, stderr %q; want %d and one line", err, msg, exitPipe)
	}
}

// TestTruncatedExitsThree: an image cut short in its data is bad input
// (exit 3) in every format, refused before any output is left.
func TestTruncatedExitsThree(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ format, opts string }{
		{"qcow2", ""}, {"qcow2", "-c"}, {"vmdk", ""}, {"vmdk", "subformat=streamOptimized"},
		{"vpc", ""}, {"vdi", ""}, {"vhdx", ""},
	} {
		name := c.format + strings.ReplaceAll(c.opts, "=", "-")
		t.Run(name, func(t *testing.T) {
			var opts []string
			switch {
			case c.opts == "-c":
				opts = []string{"-c"}
			case c.opts != "":
				opts = []string{"-o", c.opts}
			}
			img := testkit.Convert(t, disk(t), filepath.Join(dir, name+".img"), c.format, opts...)
			fi, err := os.Stat(img)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(img, fi.Size()*6/10/512*512); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(dir, name+".raw")
			code, _, errOut := convertCLI(t, img, "-o", out, "--progress", "never", "--check", "off")
			var errs []string
			for _, l := range strings.Split(strings.TrimSpace(errOut), "\n") {
				if !strings.HasPrefix(l, "convert: warning:") {
					errs = append(errs, l)
				}
			}
			if code != exitBadInput || len(errs) != 1 {
				t.Errorf("exit %d: %q; want exit 3 and one line", code, errOut)
			}
			noLeftovers(t, dir, out)
		})
	}
}
