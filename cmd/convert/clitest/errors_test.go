package clitest

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"vmimport/internal/s3test"
	"vmimport/internal/testkit"
)

// lastLine is the last line of s.
func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	return s[strings.LastIndexByte(s, '\n')+1:]
}

// closedPort is an address nothing listens on.
func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

// TestErrorsGolden: every mistake a user meets gets one line on stderr,
// in the user's terms (the flag, the file, the bucket, the server's code,
// what to do), and its exit code; nothing is written.
func TestErrorsGolden(t *testing.T) {
	s3test.Need(t, srv)
	dir := t.TempDir()
	sampleDisk(t, dir)
	bucket := srv.Bucket(t)
	closed := closedPort(t)
	vars := strings.NewReplacer("{endpoint}", srv.Endpoint, "{closedaddr}", strings.TrimPrefix(closed, "http://"), "{closed}", closed, "{bucket}", bucket)
	cases := []struct {
		args string
		code int
		msg  string
		// within bounds the time the run may take (0: no bound).
		within time.Duration
	}{
		// Commands and arguments.
		{"", 2, "convert: no image given", 0},
		{"inf disk.qcow2", 2, `convert: unknown command "inf", and no file of that name: did you mean "info"?`, 0},
		{"help inf", 2, `convert: no help topic "inf": did you mean "info"?`, 0},
		{"uploads lss s3://{bucket}/", 2, `convert: unknown command "lss" for convert uploads: did you mean "ls"?`, 0},
		{"info", 2, "convert: info takes one image, got 0 (convert info --help)", 0},
		{"disk.qcow2 a.raw b.raw", 2, "convert: convert takes one source image and, without -o, its output; got 3 arguments: disk.qcow2 a.raw b.raw", 0},
		{"disk.qcow2 x.raw -o y.raw", 2, "convert: two outputs, -o y.raw and x.raw: give one", 0},
		// Flags, all checked before the image is opened.
		{"disk.qcow2 x.raw --ouput y.raw", 2, "convert: unknown flag --ouput: did you mean --output?", 0},
		{"disk.qcow2 x.raw -Z", 2, "convert: unknown flag -Z: convert --help lists the flags", 0},
		{"info --workers 2 disk.qcow2", 2, "convert: unknown flag --workers: --workers is a flag of a conversion, not of convert info", 0},
		{"info disk.qcow2 --endpoint {endpoint}", 2, "convert: --endpoint applies to s3:// sources", 0},
		{"info --output=json disk.qcow2", 2, "convert: unknown flag --output: convert info prints JSON with --json (qemu-img's --output=json)", 0},
		{"disk.qcow2 --output=json", 2, "convert: -o json: for a JSON summary give --json (qemu-img's --output=json); for a file named json, give -o ./json", 0},
		{"disk.qcow2 x.raw -m 8", 2, "convert: unknown flag -m: qemu-img's -m (parallel coroutines) is --workers here", 0},
		{"disk.qcow2 x.raw -W", 2, "convert: unknown flag -W: qemu-img's -W (out-of-order writes) has no meaning here: blocks are read in parallel (--workers) and always written in order, so a file lands whole and an upload's parts are deterministic", 0},
		{"disk.qcow2 x.raw -S 4k", 2, "convert: unknown flag -S: qemu-img's -S (the shortest zero run made sparse) has no meaning here: every all-zero block of --block-size becomes a hole (a file), a skipped cluster (QCOW2) or a server-side copy (an upload)", 0},
		{"disk.qcow2 x.raw -n", 2, "convert: unknown flag -n: qemu-img's -n (write into an existing target) has no meaning here: the output is always made anew and lands by rename (or completes as an upload), never half-written over an old one", 0},
		{"disk.qcow2 x.raw -t none", 2, "convert: unknown flag -t: qemu-img's -t (the target's cache mode) has no meaning here: the output is written through the page cache and synced once, before it lands", 0},
		{"disk.qcow2 x.raw --workers lots", 2, "convert: --workers lots: give a whole number", 0},
		{"disk.qcow2 s3://{bucket}/a.raw --wait-timeout soon", 2, "convert: --wait-timeout soon: give a duration such as 90s, 30m or 6h", 0},
		{"disk.qcow2 x.raw --block-size 3M", 2, "convert: --block-size 3M: use a power of two from 4k to 64M", 0},
		{"disk.qcow2 x.raw --block-size lots", 2, "convert: --block-size lots: use a power of two from 4k to 64M", 0},
		{"disk.qcow2 x.raw --workers 0", 2, "convert: --workers 0: use 1..256", 0},
		{"disk.qcow2 x.raw -O vmdk", 2, "convert: -O vmdk: output format not supported (use raw or qcow2)", 0},
		{"disk.qcow2 x.raw -O qcow2", 2, "convert: -O qcow2, but the output x.raw is named .raw: give -O raw, or name the output .qcow2", 0},
		{"disk.qcow2 s3://{bucket}/web01.QCOW2 -O raw", 2, "convert: -O raw, but the output s3://{bucket}/web01.QCOW2 is named .qcow2: give -O qcow2, or name the output .raw", 0},
		{"disk.qcow2 x.qcow2 -O qcow2 --cluster-size 3k", 2, "convert: --cluster-size 3k: use a power of two from 512 to 2M", 0},
		{"disk.qcow2 x.raw --compress", 2, "convert: --compress applies to -O qcow2", 0},
		{"disk.qcow2 - -O qcow2", 2, "convert: -O qcow2 -o -: this output format needs its header patched at the end, which a pipe cannot take: write to a file or a bucket; or use -O raw for pipes", 0},
		{"disk.qcow2 x.raw --progress sometimes", 2, `convert: --progress "sometimes": use auto, always or never`, 0},
		{"disk.qcow2 x.raw -p -q", 2, "convert: -p shows the progress bar and -q hides it: give one", 0},
		{"disk.qcow2 x.raw -f vpx", 2, "convert: -f vpx: not a format convert reads; use raw, qcow2, vmdk, vhd, vhdx, vdi, ova", 0},
		{"disk.qcow2 x.raw --verify", 2, "convert: --verify applies to uploads (-o s3://BUCKET/KEY)", 0},
		{"disk.qcow2 x.raw --import", 2, "convert: --import and --wait need an upload: give -o s3://BUCKET/KEY", 0},
		{"disk.qcow2 s3://ux/a.raw", 2, `convert: s3://ux/a.raw: bucket name "ux": 2 characters; bucket names have 3 to 63`, 0},
		{"disk.qcow2 s3://{bucket}/a.raw --part-size 1M", 2, "convert: --part-size 1M: use 5M..5G, or auto", 0},
		{"disk.qcow2 s3://{bucket}/a.raw --endpoint localhost:9000", 2, `convert: --endpoint "localhost:9000": give a URL such as https://s3.cn-north-1.jdcloud-oss.com`, 0},
		// The source.
		{"missing.img x.raw", 3, "convert: missing.img: no such file or directory", 0},
		{"disk.qcow2 x.raw -f vmdk", 3, "convert: disk.qcow2: -f vmdk, but the file is qcow2 (v3, compat 1.1): convert tells the format from the bytes; drop -f, or give the vmdk file", 0},
		{"disk.qcow2 x.raw --system-disk-size-gb 45", 3, "convert: disk.qcow2: --system-disk-size-gb 45: a system disk of 45 GB is not a multiple of 10; use 50 (--force goes on anyway)", 0},
		// The output.
		{"disk.qcow2 no/such/dir/x.raw", 1, "convert: -o no/such/dir/x.raw: there is no folder no/such/dir: create it first, or give another output", 0},
		// The store, before a byte of the image is read.
		{"disk.qcow2 s3://Bad_Name/a.raw --endpoint {endpoint}", 1, `convert: bucket "Bad_Name" at {endpoint}: InvalidBucketName: The specified bucket is not valid.`, 0},
		{"disk.qcow2 s3://no-such-bucket-here/a.raw --endpoint {endpoint}", 1, `convert: bucket "no-such-bucket-here" does not exist at {endpoint} (NoSuchBucket): create it, or check the name and --endpoint`, 0},
		{"disk.qcow2 s3://{bucket}/a.raw --endpoint {closed}", 1, "convert: cannot reach the object store at {closed}: connection refused (check --endpoint, and that the store is running)", 5 * time.Second},
		{"uploads ls s3://{bucket}/ --endpoint {closed}", 1, `convert: listing the uploads of bucket "{bucket}": S3 ListMultipartUploads: cannot connect to {closedaddr}: connection refused`, 5 * time.Second},
	}
	for _, c := range cases {
		args := strings.Fields(vars.Replace(c.args))
		want := vars.Replace(c.msg)
		r := convert(t, dir, args...)
		if r.code != c.code || lastLine(r.stderr) != want {
			t.Errorf("convert %s:\n  exit %d, want %d\n  got  %q\n  want %q", strings.Join(args, " "), r.code, c.code, lastLine(r.stderr), want)
		}
		if n := strings.Count(strings.TrimSpace(r.stderr), "\n"); n > 0 && c.args != "" && !strings.Contains(r.stderr, "convert: check:") {
			t.Errorf("convert %s: %d lines on stderr, want one:\n%s", strings.Join(args, " "), n+1, r.stderr)
		}
		if c.within > 0 && r.took > c.within {
			t.Errorf("convert %s took %s, want at most %s", strings.Join(args, " "), r.took.Round(time.Millisecond), c.within)
		}
	}
	// Nothing was written, under any name.
	left, _ := filepath.Glob(filepath.Join(dir, "*.raw"))
	partial, _ := filepath.Glob(filepath.Join(dir, ".*.partial"))
	if len(left)+len(partial) > 0 {
		t.Errorf("left behind: %v %v", left, partial)
	}
	// A run that went well: qemu-img's habit convert SRC OUT.
	if r := convert(t, dir, "disk.qcow2", "out.raw", "-q"); r.code != 0 || r.stderr != "" || r.stdout != "" {
		t.Errorf("convert disk.qcow2 out.raw -q: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if fi, err := os.Stat(filepath.Join(dir, "out.raw")); err != nil || fi.Size() != 64<<20 {
		t.Errorf("out.raw: %v %v", fi, err)
	}
}

// TestCredentialErrors: refused and missing credentials are told as such.
func TestCredentialErrors(t *testing.T) {
	s3test.Need(t, srv)
	dir := t.TempDir()
	sampleDisk(t, dir)
	bucket := srv.Bucket(t)
	run := func(env []string, args ...string) result {
		cmd := exec.Command(bin, args...)
		cmd.Dir = dir
		cmd.Env = append(srv.Env(t.TempDir()), env...)
		var errb bytes.Buffer
		cmd.Stderr = &errb
		err := cmd.Run()
		r := result{stderr: errb.String()}
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			r.code = ee.ExitCode()
		}
		return r
	}
	args := []string{"disk.qcow2", "s3://" + bucket + "/a.raw", "--endpoint", srv.Endpoint}
	r := run([]string{"AWS_SECRET_ACCESS_KEY=wrong"}, args...)
	want := `convert: bucket "` + bucket + `" at ` + srv.Endpoint + `: the store refused the credentials (SignatureDoesNotMatch: The request signature we calculated does not match the signature you provided. Check your key and signing method): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or --profile`
	if r.code != 1 || lastLine(r.stderr) != want {
		t.Errorf("wrong secret: exit %d\n  got  %q\n  want %q", r.code, lastLine(r.stderr), want)
	}
	r = run([]string{"AWS_ACCESS_KEY_ID=", "AWS_SECRET_ACCESS_KEY="}, args...)
	want = "convert: no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or give --profile (the environment, ~/.aws/credentials and ~/.aws/config were looked at, and the EC2 instance metadata)"
	if r.code != 1 || lastLine(r.stderr) != want {
		t.Errorf("no credentials: exit %d\n  got  %q\n  want %q", r.code, lastLine(r.stderr), want)
	}
}

// TestUploadsAbortAsks: uploads abort lists what it would drop and, with
// no terminal to ask on, refuses without --yes; --dry-run only lists;
// --yes aborts.
func TestUploadsAbortAsks(t *testing.T) {
	s3test.Need(t, srv)
	dir := t.TempDir()
	bucket := srv.Bucket(t)
	c := srv.Client()
	cr, err := c.CreateMultipartUpload(context.Background(), &s3.CreateMultipartUploadInput{Bucket: aws.String(bucket), Key: aws.String("images/web01.raw")})
	if err != nil {
		t.Fatal(err)
	}
	id := aws.ToString(cr.UploadId)
	where := "s3://" + bucket + "/images/"
	for _, args := range [][]string{{"uploads", "abort", where}, {"uploads", "abort", where, "--dry-run"}} {
		r := convert(t, dir, append(args, "--endpoint", srv.Endpoint)...)
		if !strings.Contains(r.stdout, id) || !strings.Contains(r.stdout, "s3://"+bucket+"/images/web01.raw") {
			t.Errorf("%v: does not list the upload:\n%s", args, r.stdout)
		}
		if len(srv.Pending(t, bucket)) != 1 {
			t.Fatalf("%v aborted the upload", args)
		}
		wantCode, wantMsg := 0, ""
		if args[len(args)-1] != "--dry-run" {
			wantCode, wantMsg = 2, "convert: not asking without a terminal: give --yes to abort 1 upload(s) and delete 0 zero object(s), or --dry-run to list only"
		}
		if r.code != wantCode || (wantMsg != "" && lastLine(r.stderr) != wantMsg) {
			t.Errorf("%v: exit %d, %q; want %d %q", args, r.code, r.stderr, wantCode, wantMsg)
		}
	}
	r := convert(t, dir, "uploads", "abort", where, "--yes", "--endpoint", srv.Endpoint)
	if r.code != 0 || !strings.Contains(r.stdout, "aborted "+id) || len(srv.Pending(t, bucket)) != 0 {
		t.Errorf("--yes: exit %d, %s%s; pending %v", r.code, r.stdout, r.stderr, srv.Pending(t, bucket))
	}
}

// TestInterruptMessage: Ctrl-C and SIGTERM in the middle of a conversion
// say what stopped it and what was left: nothing.
func TestInterruptMessage(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a 256 MiB disk")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "big.raw")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	block := bytes.Repeat([]byte("interrupt me "), 1<<20/13+1)[:1<<20]
	for range 256 {
		f.Write(block)
	}
	f.Close()
	for _, c := range []struct {
		sig  syscall.Signal
		want string
	}{
		{syscall.SIGINT, "convert: interrupted by Ctrl-C (SIGINT): nothing was left under out.raw"},
		{syscall.SIGTERM, "convert: interrupted by SIGTERM: nothing was left under out.raw"},
		{syscall.SIGHUP, "convert: interrupted by SIGHUP (the terminal went away): nothing was left under out.raw"},
	} {
		cmd := exec.Command(bin, "big.raw", "out.raw", "--workers", "1", "--block-size", "64k")
		cmd.Dir = dir
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for !testkit.Writing(cmd.Process.Pid, dir, "big.raw") {
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				t.Fatal("the conversion never started writing")
			}
			time.Sleep(2 * time.Millisecond)
		}
		cmd.Process.Signal(c.sig)
		err := cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 130 || lastLine(stderr.String()) != c.want {
			t.Errorf("%v: %v\n  got  %q\n  want %q", c.sig, err, lastLine(stderr.String()), c.want)
		}
		if m, _ := filepath.Glob(filepath.Join(dir, "*out.raw*")); len(m) > 0 {
			t.Errorf("%v: left %v", c.sig, m)
		}
	}
}
