//go:build unix

package clitest

import (
	"bytes"
	"io"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"

	"vmimport/internal/s3test"
)

var (
	ansi = regexp.MustCompile(`\x1b\[[0-9;?]*[A-Za-z]`)
	// A frame of the bar: the phase, the bar, the bytes done of the total
	// (not shown until the image is open and its size known).
	barFrame = regexp.MustCompile(`^\s*(\S.*?)\s+\[[-=>]*\](?:\s+(\S+ \S+) / (\S+ \S+))?`)
)

// frame is one drawing of the bar.
type frame struct {
	phase, done, total string
}

// TestProgressOnTerminal runs an upload with --verify on a terminal (a
// pty) and reads what a user sees: the bar goes through every phase, from
// opening the image to the read-back, moves during the upload's last parts
// and its read-back, ends as done at 100%, and the summary line comes after
// its last frame. The store is slowed down (300 ms a request, 2 parts at a
// time) so that the upload's steps take a few frames each.
func TestProgressOnTerminal(t *testing.T) {
	s3test.Need(t, srv)
	dir := t.TempDir()
	sampleDisk(t, dir)
	bucket := srv.Bucket(t)
	proxy := s3test.NewProxy(srv)
	defer proxy.Close()
	proxy.Inject(300*time.Millisecond, func(op string, _ int) s3test.Fault {
		switch op {
		case "UploadPart", "UploadPartCopy", "CompleteMultipartUpload", "HEAD", "Get":
			return s3test.Slow
		}
		return s3test.Pass
	})
	cmd := exec.Command(bin, "disk.qcow2", "s3://"+bucket+"/disk.raw", "-O", "raw", "--endpoint", proxy.URL, "--verify", "--upload-concurrency", "2")
	cmd.Dir = dir
	cmd.Env = append(srv.Env(t.TempDir()), "TERM=xterm")
	tty, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 50, Cols: 150})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	copied := make(chan struct{})
	go func() {
		io.Copy(&out, tty) // ends with EIO once the process is gone
		close(copied)
	}()
	werr := cmd.Wait()
	select {
	case <-copied:
	case <-time.After(10 * time.Second):
		t.Fatal("the terminal's output never ended")
	}
	tty.Close()
	screen := ansi.ReplaceAllString(out.String(), "")
	if werr != nil {
		t.Fatalf("convert: %v\n%s", werr, screen)
	}

	var frames []frame
	var lines []string
	summaryAt := -1
	for _, l := range strings.FieldsFunc(screen, func(r rune) bool { return r == '\n' || r == '\r' }) {
		if strings.TrimSpace(l) == "" {
			continue
		}
		lines = append(lines, l)
		if m := barFrame.FindStringSubmatch(l); m != nil {
			if summaryAt >= 0 {
				t.Errorf("the bar was drawn again after the summary line: %q", l)
			}
			frames = append(frames, frame{m[1], m[2], m[3]})
			continue
		}
		if strings.HasPrefix(l, "disk.qcow2 -> s3://"+bucket+"/disk.raw (raw): 64.0 MiB virtual") && summaryAt < 0 {
			summaryAt = len(frames)
		}
	}
	if len(frames) == 0 {
		t.Fatalf("no bar on the terminal:\n%s", screen)
	}
	var phases []string
	for _, f := range frames {
		if len(phases) == 0 || phases[len(phases)-1] != f.phase {
			phases = append(phases, f.phase)
		}
	}
	want := []string{"opening", "checking the bucket", "checking import rules", "converting", "verifying digests", "finishing",
		"uploading the last parts", "completing the upload", "checking the object", "verifying the object", "done"}
	if !slices.Equal(phases, want) {
		t.Errorf("phases drawn:\n  %q\nwant\n  %q\n%s", phases, want, screen)
	}
	// The bar moves during the upload's last parts and its read-back.
	for _, p := range []string{"uploading the last parts", "verifying the object"} {
		done := map[string]bool{}
		for _, f := range frames {
			if f.phase == p {
				done[f.done] = true
			}
		}
		if len(done) < 2 {
			t.Errorf("the bar did not move while %s: %v", p, done)
		}
	}
	last := frames[len(frames)-1]
	if last.phase != "done" || last.done != last.total || last.total != "64.0 MiB" {
		t.Errorf("last frame %+v, want done at 64.0 MiB / 64.0 MiB", last)
	}
	if summaryAt != len(frames) {
		t.Errorf("the summary line is not right after the bar's last frame (after frame %d of %d):\n%s", summaryAt, len(frames), strings.Join(lines, "\n"))
	}
	if !strings.Contains(screen, "read back and verified") {
		t.Errorf("no verified upload report:\n%s", screen)
	}
}
