//go:build faults

// The fault campaign (make faults): signals at random points of file,
// stdout and upload runs, a full file system, a server gone mid-upload and
// a server answering a wrong ETag. After each: nothing under the output
// name unless the run succeeded (and then the right bytes), no incomplete
// upload unless the --resume state file records it, and a resume reaching
// the same object. Findings that break no invariant but leave something
// behind are logged as FINDING.

package uploadtest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"vmimport/internal/s3test"
	"vmimport/internal/testkit"
)

var signals = []syscall.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGKILL}

// campaign collects one line per run for the report at the end.
type campaign struct {
	mu       sync.Mutex
	rows     []string
	findings []string
}

func (c *campaign) row(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rows = append(c.rows, fmt.Sprintf(format, args...))
}

func (c *campaign) finding(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.findings = append(c.findings, fmt.Sprintf(format, args...))
}

// exitOf is a finished command's exit code, or -signal when a signal
// ended it.
func exitOf(cmd *exec.Cmd) int {
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ok && ws.Signaled() {
		return -int(ws.Signal())
	}
	return cmd.ProcessState.ExitCode()
}

// timed measures how long a successful run of args takes.
func timed(t *testing.T, cmd *exec.Cmd) time.Duration {
	t.Helper()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("baseline run: %v\n%s", err, stderr.String())
	}
	return time.Since(start)
}

func partials(dir string) []string {
	m, _ := filepath.Glob(filepath.Join(dir, ".*.partial"))
	return m
}

func TestFaults(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	disk := makeDisk(t, dir, 256*mib, []run{{mib, 60 * mib}, {100 * mib, 40 * mib}, {200 * mib, 30 * mib}})
	want := testkit.RawSHA256(t, disk)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 16))
	c := &campaign{}
	defer func() {
		t.Logf("fault campaign: %d runs", len(c.rows))
		for _, r := range c.rows {
			t.Log("  " + r)
		}
		for _, f := range c.findings {
			t.Log("FINDING: " + f)
		}
	}()

	t.Run("file", func(t *testing.T) { faultsFile(t, c, rng, disk, want) })
	t.Run("stdout", func(t *testing.T) { faultsStdout(t, c, rng, disk) })
	t.Run("upload", func(t *testing.T) { faultsUpload(t, e, c, rng, disk, want) })
	t.Run("full-file-system", func(t *testing.T) { faultsFull(t, c, disk) })
	t.Run("server-down", func(t *testing.T) { faultsServerDown(t, e, c, disk, want) })
	t.Run("wrong-etag", func(t *testing.T) { faultsWrongETag(t, e, c, disk) })
}

// faultsFile: SIGINT/TERM/HUP/KILL at random points of a conversion to a
// file, RAW and QCOW2.
func faultsFile(t *testing.T, c *campaign, rng *rand.Rand, disk, want string) {
	out := filepath.Join(t.TempDir(), "out.img")
	for _, format := range []string{"raw", "qcow2"} {
		args := []string{disk, "-O", format, "-o", out, "--workers", "1", "--progress", "never", "--check", "off"}
		base := timed(t, exec.Command(bin, args...))
		var wantOut string
		if format == "raw" {
			wantOut = want
		} else {
			wantOut = testkit.RawSHA256(t, out)
		}
		os.Remove(out)
		for _, sig := range signals {
			for range 4 {
				at := time.Duration(rng.Int64N(int64(base) * 6 / 5))
				cmd := exec.Command(bin, args...)
				var stderr bytes.Buffer
				cmd.Stderr = &stderr
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				time.Sleep(at)
				cmd.Process.Signal(sig)
				cmd.Wait()
				code := exitOf(cmd)
				_, statErr := os.Stat(out)
				left := partials(filepath.Dir(out))
				verdict := "ok"
				switch {
				case code == 0:
					got := want
					if format == "qcow2" {
						got = testkit.RawSHA256(t, out)
					} else {
						got = testkit.FileSHA256(t, out)
					}
					if statErr != nil || got != wantOut {
						verdict = "VIOLATION: exit 0 without the right output"
					}
				case code == 130 && sig != syscall.SIGKILL:
					if statErr == nil || len(left) > 0 {
						verdict = fmt.Sprintf("VIOLATION: left %v (output there: %v)", left, statErr == nil)
					}
				case code == -int(sig) && sig != syscall.SIGKILL:
					// The signal came before main installed its handlers
					// (the first milliseconds): it must have found nothing.
					if statErr == nil || len(left) > 0 {
						verdict = fmt.Sprintf("VIOLATION: died of %v and left %v (output there: %v)", sig, left, statErr == nil)
					} else {
						verdict = "died of the signal before the handlers were set: nothing created"
					}
				case code == -int(syscall.SIGKILL) && sig == syscall.SIGKILL:
					if statErr == nil {
						verdict = "VIOLATION: output present after kill -9 mid-run"
					} else if len(left) > 0 {
						verdict = "temporary file left (kill -9 cannot be cleaned up after)"
						c.finding("file %s: kill -9 at %v leaves %s (%d bytes) beside the output", format, at.Round(time.Millisecond), filepath.Base(left[0]), size(left[0]))
					}
				default:
					verdict = fmt.Sprintf("VIOLATION: exit %d after %v: %s", code, sig, strings.TrimSpace(stderr.String()))
				}
				c.row("file %-5s %-7v at %6v of %6v: exit %4d  %s", format, sig, at.Round(time.Millisecond), base.Round(time.Millisecond), code, verdict)
				if strings.HasPrefix(verdict, "VIOLATION") {
					t.Errorf("file %s, %v at %v: %s", format, sig, at, verdict)
				}
				os.Remove(out)
				for _, l := range left {
					os.Remove(l)
				}
			}
		}
	}
}

func size(p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return -1
	}
	return fi.Size()
}

// faultsStdout: the same signals on a conversion to stdout, read by the
// test; a run that ends 0 must have written the whole disk.
func faultsStdout(t *testing.T, c *campaign, rng *rand.Rand, disk string) {
	args := []string{disk, "-O", "raw", "-o", "-", "--workers", "1", "--progress", "never", "--check", "off"}
	cmd := exec.Command(bin, args...)
	cmd.Stdout = io.Discard
	base := timed(t, cmd)
	for _, sig := range signals {
		for range 3 {
			at := time.Duration(rng.Int64N(int64(base) * 6 / 5))
			cmd := exec.Command(bin, args...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			r, _ := cmd.StdoutPipe()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			var n int64
			done := make(chan struct{})
			go func() { n, _ = io.Copy(io.Discard, r); close(done) }()
			time.Sleep(at)
			cmd.Process.Signal(sig)
			<-done
			cmd.Wait()
			code := exitOf(cmd)
			verdict := "ok"
			switch {
			case code == 0 && n != 256*mib:
				verdict = fmt.Sprintf("VIOLATION: exit 0 after %d of %d bytes", n, 256*mib)
			case code == 0, code == 130 && sig != syscall.SIGKILL, code == -int(sig):
			default:
				verdict = fmt.Sprintf("VIOLATION: exit %d: %s", code, strings.TrimSpace(stderr.String()))
			}
			c.row("stdout raw   %-7v at %6v of %6v: exit %4d  %d bytes out  %s", sig, at.Round(time.Millisecond), base.Round(time.Millisecond), code, n, verdict)
			if strings.HasPrefix(verdict, "VIOLATION") {
				t.Error(verdict)
			}
		}
	}
	// The reader going away: one line and exit 141.
	cmd = exec.Command(bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	r, _ := cmd.StdoutPipe()
	cmd.Start()
	io.CopyN(io.Discard, r, 8*mib)
	r.Close()
	cmd.Wait()
	code := exitOf(cmd)
	verdict := "ok"
	if code != 141 || !strings.Contains(stderr.String(), "closed the pipe") {
		verdict = fmt.Sprintf("VIOLATION: exit %d: %q", code, stderr.String())
		t.Error(verdict)
	}
	c.row("stdout raw   reader closes after 8 MiB: exit %d  %s", code, verdict)
}

// bucketState describes what an upload left in the bucket.
type bucketState struct {
	keys    []string
	pending []string
}

func (e *env) state(t *testing.T) bucketState {
	return bucketState{keys: srv.Keys(t, e.bucket), pending: srv.Pending(t, e.bucket)}
}

func (b bucketState) String() string {
	return fmt.Sprintf("objects %v, incomplete uploads %d", b.keys, len(b.pending))
}

// clean empties the bucket between runs.
func (e *env) clean(t *testing.T) {
	ctx := context.Background()
	cl := srv.Client()
	for _, k := range srv.Keys(t, e.bucket) {
		cl.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(e.bucket), Key: aws.String(k)})
	}
	e.run("uploads", "abort", "s3://"+e.bucket+"/", "--yes")
}

// faultsUpload: the signals at random points of an upload, without and
// with --resume; after each, the bucket holds nothing, or the upload the
// state file records, which a --resume completes into the same object.
func faultsUpload(t *testing.T, e *env, c *campaign, rng *rand.Rand, disk, want string) {
	dir := t.TempDir()
	stateFile := filepath.Join(dir, "up.state")
	dest := "s3://" + e.bucket + "/faults.raw"
	args := []string{disk, "-O", "raw", "-o", dest, "--state-file", stateFile, "--upload-concurrency", "2", "--part-size", "8M"}
	base := timed(t, e.command(args...))
	e.clean(t)
	for _, resume := range []bool{false, true} {
		for _, sig := range signals {
			for range 3 {
				a := args
				if resume {
					a = append(append([]string{}, args...), "--resume")
				}
				at := time.Duration(rng.Int64N(int64(base) * 6 / 5))
				cmd := e.command(a...)
				var stderr bytes.Buffer
				cmd.Stderr = &stderr
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				time.Sleep(at)
				cmd.Process.Signal(sig)
				cmd.Wait()
				code := exitOf(cmd)
				after := e.state(t)
				_, stErr := os.Stat(stateFile)
				recorded := stErr == nil
				verdict := "ok"
				switch {
				case code == 0:
					if got := e.objectSHA("faults.raw"); got != want || recorded || len(after.pending) > 0 || len(after.keys) != 1 {
						verdict = fmt.Sprintf("VIOLATION: exit 0 with %s, state file kept %v", after, recorded)
					}
				case code == 130 && sig != syscall.SIGKILL && !resume:
					if len(after.keys) > 0 || len(after.pending) > 0 || recorded {
						verdict = fmt.Sprintf("VIOLATION: interrupted upload left %s, state file %v", after, recorded)
					}
				case code == -int(sig) && sig != syscall.SIGKILL && !recorded && len(after.keys) == 0 && len(after.pending) == 0:
					verdict = "died of the signal before the handlers were set: nothing created"
				case (code == 130 && sig != syscall.SIGKILL) || (code == -int(syscall.SIGKILL) && sig == syscall.SIGKILL):
					// Kept for --resume (or killed): whatever is left must be
					// recorded, and a resume must reach the same object.
					if (len(after.pending) > 0 || len(after.keys) > 0) && !recorded {
						verdict = fmt.Sprintf("VIOLATION: %s with no state file", after)
						break
					}
					if !recorded {
						break // killed before the upload began
					}
					r := e.run(append(append([]string{}, args...), "--resume")...)
					final := e.state(t)
					got := ""
					if r.code == 0 {
						got = e.objectSHA("faults.raw")
					}
					if r.code != 0 || got != want || len(final.pending) > 0 || len(final.keys) != 1 {
						verdict = fmt.Sprintf("VIOLATION: resume exit %d, %s: %s", r.code, final, firstLine(r.stderr))
					} else {
						verdict = fmt.Sprintf("left %s; --resume reached the same object", after)
					}
				default:
					verdict = fmt.Sprintf("VIOLATION: exit %d: %s", code, firstLine(stderr.String()))
				}
				c.row("upload resume=%-5v %-7v at %6v of %6v: exit %4d  %s", resume, sig, at.Round(time.Millisecond), base.Round(time.Millisecond), code, verdict)
				if strings.HasPrefix(verdict, "VIOLATION") {
					t.Errorf("upload resume=%v %v at %v: %s\n%s", resume, sig, at, verdict, stderr.String())
				}
				os.Remove(stateFile)
				e.clean(t)
			}
		}
	}
}

func firstLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// faultsFull: the output's file system fills up (a 16 MiB tmpfs): exit 1,
// a message naming the cause, nothing left.
func faultsFull(t *testing.T, c *campaign, disk string) {
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs (needs root): %v %s", err, out)
	}
	defer exec.Command("umount", mnt).Run()
	for _, format := range []string{"raw", "qcow2"} {
		out := filepath.Join(mnt, "out."+format)
		cmd := exec.Command(bin, disk, "-O", format, "-o", out, "--progress", "never", "--check", "off")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		cmd.Run()
		code := exitOf(cmd)
		ents, _ := os.ReadDir(mnt)
		verdict := "ok"
		if code != 1 || len(ents) > 0 || !strings.Contains(stderr.String(), "no space left on device") {
			verdict = fmt.Sprintf("VIOLATION: exit %d, %d files left: %s", code, len(ents), strings.TrimSpace(stderr.String()))
			t.Error(verdict)
		}
		c.row("full fs %-5s (16 MiB tmpfs): exit %d  %s  [%s]", format, code, verdict, firstLine(stderr.String()))
	}
}

// faultsServerDown: the server goes away mid-upload (every connection
// dropped): the run fails; the upload it could not abort is recorded in the
// state file; once the server is back, --resume reaches the same object.
func faultsServerDown(t *testing.T, e *env, c *campaign, disk, want string) {
	dir := t.TempDir()
	stateFile := filepath.Join(dir, "up.state")
	dest := "s3://" + e.bucket + "/down.raw"
	args := []string{disk, "-O", "raw", "-o", dest, "--state-file", stateFile, "--upload-concurrency", "2", "--part-size", "8M"}
	e.proxy.Inject(200*time.Millisecond, func(op string, n int) s3test.Fault {
		if op == "UploadPart" {
			return s3test.Slow
		}
		return s3test.Pass
	})
	cmd := e.command(args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	before := e.proxy.Done("UploadPart")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for e.proxy.Done("UploadPart") < before+3 {
		time.Sleep(10 * time.Millisecond)
	}
	e.proxy.Inject(0, func(string, int) s3test.Fault { return s3test.Drop })
	cmd.Wait()
	code := exitOf(cmd)
	e.proxy.Inject(0, nil)
	after := e.state(t)
	_, stErr := os.Stat(stateFile)
	verdict := "ok"
	switch {
	case code != 1:
		verdict = fmt.Sprintf("VIOLATION: exit %d: %s", code, firstLine(stderr.String()))
	case len(after.pending) > 0 && stErr != nil:
		verdict = fmt.Sprintf("VIOLATION: %s, no state file", after)
	}
	if verdict == "ok" && (len(after.pending) > 0 || stErr == nil) {
		r := e.run(append(args, "--resume")...)
		final := e.state(t)
		if r.code != 0 || e.objectSHA("down.raw") != want || len(final.pending) > 0 || len(final.keys) != 1 {
			verdict = fmt.Sprintf("VIOLATION: resume exit %d, %s: %s", r.code, final, firstLine(r.stderr))
		} else {
			verdict = fmt.Sprintf("left %s, recorded; --resume reached the same object", after)
		}
	}
	c.row("server down mid-upload: exit %d  %s  [%s]", code, verdict, firstLine(stderr.String()))
	if strings.HasPrefix(verdict, "VIOLATION") {
		t.Error(verdict + "\n" + stderr.String())
	}
	os.Remove(stateFile)
	e.clean(t)
}

// faultsWrongETag: the server acknowledges a part with an ETag that is not
// the MD5 of what was sent: the run fails (exit 1) and leaves nothing.
func faultsWrongETag(t *testing.T, e *env, c *campaign, disk string) {
	for _, op := range []string{"UploadPart", "UploadPartCopy"} {
		second := e.proxy.Count(op) + 2 // the proxy counts requests over its life
		e.proxy.Inject(0, func(o string, n int) s3test.Fault {
			if o == op && n == second {
				return s3test.WrongETag
			}
			return s3test.Pass
		})
		dest := "s3://" + e.bucket + "/etag.raw"
		r := e.run(disk, "-O", "raw", "-o", dest, "--part-size", "8M")
		e.proxy.Inject(0, nil)
		after := e.state(t)
		verdict := "ok"
		if r.code != 1 || !strings.Contains(r.stderr, "ETag") || len(after.keys) > 0 || len(after.pending) > 0 {
			verdict = fmt.Sprintf("VIOLATION: exit %d, %s: %s", r.code, after, firstLine(r.stderr))
			t.Error(verdict)
		}
		c.row("wrong ETag on %s 2: exit %d  %s  [%s]", op, r.code, verdict, firstLine(r.stderr))
		e.clean(t)
	}
}
