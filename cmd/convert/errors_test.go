package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"syscall"
	"testing"

	"vmimport/job"
)

// TestPlain: the messages of the packages below, as they reach the CLI,
// come out in the user's terms.
func TestPlain(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{
			`completing the upload: operation error S3: CompleteMultipartUpload, exceeded maximum number of attempts, 12, https response error StatusCode: 503, RequestID: , HostID: , api error ServiceUnavailable: Please reduce your request rate.`,
			`completing the upload: S3 CompleteMultipartUpload: ServiceUnavailable: Please reduce your request rate. (after 12 attempts)`,
		},
		{
			`converting disk.vmdk: part 3: operation error S3: UploadPart, exceeded maximum number of attempts, 12, https response error StatusCode: 0, RequestID: , HostID: , request send failed, Put "http://127.0.0.1:9/b/k?partNumber=3&uploadId=x": dial tcp 127.0.0.1:9: connect: connection refused`,
			`converting disk.vmdk: part 3: S3 UploadPart: cannot connect to 127.0.0.1:9: connection refused (after 12 attempts)`,
		},
		{
			`checking the object: operation error S3: HeadObject, https response error StatusCode: 403, RequestID: 1, HostID: 2, api error Forbidden: Forbidden`,
			`checking the object: S3 HeadObject: Forbidden`,
		},
		{
			`verifying part 2: operation error S3: GetObject, https response error StatusCode: 500, RequestID: , HostID: , deserialization failed`,
			`verifying part 2: S3 GetObject: HTTP 500 deserialization failed`,
		},
		{
			`listing: operation error S3: ListMultipartUploads, https response error StatusCode: 0, RequestID: , HostID: , request send failed, Get "http://b.nosuch.invalid/?uploads": dial tcp: lookup b.nosuch.invalid on 10.0.0.53:53: no such host`,
			`listing: S3 ListMultipartUploads: host b.nosuch.invalid not found`,
		},
		{
			`converting big.raw: writing /x/.out.raw.2276268068.partial: write /x/.out.raw.2276268068.partial: no space left on device`,
			`converting big.raw: writing /x/out.raw: no space left on device`,
		},
		{
			`creating the output: open out/.disk.raw.123.partial: permission denied`,
			`creating the output: out/disk.raw: permission denied`,
		},
		{`stream: invalid options: block size 3145728 is not a power of two`, `invalid options: block size 3145728 is not a power of two`},
		{`-O qcow2 -o -: writer: this output format needs its header patched`, `-O qcow2 -o -: this output format needs its header patched`},
		{`open nosuch.img: no such file or directory`, `nosuch.img: no such file or directory`},
		{"a: two\nlines", "a: two lines"},
	} {
		if got := plain(c.in); got != c.want {
			t.Errorf("plain(%q)\n  = %q\n want %q", c.in, got, c.want)
		}
	}
}

// TestMessage: what main prints for the failures it words itself.
func TestMessage(t *testing.T) {
	file := job.Spec{Source: "d.qcow2", Output: "dir/out.raw"}
	bucket := job.Spec{Source: "d.qcow2", Output: "s3://bkt/k"}
	kept := bucket
	kept.Upload.Keep, kept.Upload.Resume = true, true
	stopped, cancel := context.WithCancelCause(context.Background())
	cancel(interrupted{syscall.SIGTERM})
	bg := context.Background()
	tempErr := func(err error) error {
		return fmt.Errorf("creating the output: %w", &fs.PathError{Op: "open", Path: "dir/.out.raw.42.partial", Err: err})
	}
	for _, c := range []struct {
		ctx  context.Context
		err  error
		want string
	}{
		{stopped, withOutput(context.Canceled, file), "interrupted by SIGTERM: nothing was left under dir/out.raw"},
		{stopped, withOutput(context.Canceled, bucket), "interrupted by SIGTERM: the upload was aborted; nothing was left in the bucket"},
		{stopped, withOutput(context.Canceled, kept), "interrupted by SIGTERM: the upload is kept: run the same command with --resume to continue it"},
		{bg, withOutput(tempErr(syscall.ENOENT), file), "-o dir/out.raw: there is no folder dir: create it first, or give another output"},
		{bg, withOutput(tempErr(syscall.EACCES), file), "-o dir/out.raw: no permission to create a file in dir"},
		{bg, withOutput(tempErr(syscall.EROFS), file), "-o dir/out.raw: dir is on a read-only file system"},
		{bg, withOutput(errors.New("stream: internal error"), file), "internal error"},
		{bg, fmt.Errorf("x: %w", syscall.EPIPE), "the reader of stdout closed the pipe before the image was complete: what it got is cut short"},
	} {
		code := exitCode(c.ctx, c.err)
		if got := message(c.ctx, code, c.err); got != c.want {
			t.Errorf("%v (exit %d)\n  = %q\n want %q", c.err, code, got, c.want)
		}
	}
}
