package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/spf13/pflag"

	"vmimport/upload"
)

const uploadsHelp = `Usage: convert uploads ls|abort s3://BUCKET[/PREFIX] [flags]

Lists (ls) or aborts (abort) the incomplete multipart uploads under a
prefix, and the zero objects (KEY.convert-zeros-*) convert left behind: a
run killed after completing its upload but before its cleanup leaves one
(--resume of that run removes it too). The target cloud's OSS has no
lifecycle rule that cleans them, and they cost storage until removed.
abort aborts the uploads and deletes the zero objects; with --upload-id,
only that upload and its zero object.

Flags:
`

// runUploads is `convert uploads ls|abort s3://bucket/prefix`.
func runUploads(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var u uploadOptions
	var asJSON bool
	var uploadID string
	fs := pflag.NewFlagSet("convert uploads", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	u.registerStore(fs)
	fs.StringVar(&uploadID, "upload-id", "", "abort only this upload")
	fs.BoolVar(&asJSON, "json", false, "print JSON for scripts")
	fs.Usage = func() {
		fmt.Fprint(stderr, uploadsHelp)
		fmt.Fprint(stderr, fs.FlagUsages())
	}
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() != 2 || (fs.Arg(0) != "ls" && fs.Arg(0) != "abort") {
		fs.Usage()
		return usageError{fmt.Errorf("give ls or abort, then s3://BUCKET[/PREFIX]")}
	}
	bucket, prefix, err := upload.ParseS3URL(fs.Arg(1))
	if err != nil {
		return usageError{err}
	}
	u.concurrency = 4
	c, err := u.client(ctx)
	if err != nil {
		return err
	}
	if _, err := c.Credentials(ctx); err != nil {
		return err
	}
	pending, err := c.ListUploads(ctx, bucket, prefix)
	if err != nil {
		return err
	}
	if uploadID == "" {
		zeros, err := c.ListZeroObjects(ctx, bucket, prefix)
		if err != nil {
			return err
		}
		pending = append(pending, zeros...)
	}
	if uploadID != "" {
		var only []upload.Pending
		for _, p := range pending {
			if p.UploadID == uploadID {
				only = append(only, p)
			}
		}
		if len(only) == 0 {
			return fmt.Errorf("no incomplete upload %s under s3://%s/%s", uploadID, bucket, prefix)
		}
		pending = only
	}
	if fs.Arg(0) == "abort" {
		for _, p := range pending {
			if p.Kind == upload.KindZeroObject {
				if err := c.DeleteZeroObject(ctx, bucket, p); err != nil {
					return err
				}
				if !asJSON {
					fmt.Fprintf(stdout, "deleted zero object  s3://%s/%s\n", bucket, p.Key)
				}
				continue
			}
			if err := c.AbortUpload(ctx, bucket, p); err != nil {
				return err
			}
			if !asJSON {
				fmt.Fprintf(stdout, "aborted %s  s3://%s/%s\n", p.UploadID, bucket, p.Key)
			}
		}
	}
	if asJSON {
		if pending == nil {
			pending = []upload.Pending{}
		}
		e := json.NewEncoder(stdout)
		e.SetIndent("", "  ")
		return e.Encode(pending)
	}
	if fs.Arg(0) == "ls" {
		for _, p := range pending {
			what := p.UploadID
			if p.Kind == upload.KindZeroObject {
				what = fmt.Sprintf("zero object (%d bytes)", p.Size)
			}
			fmt.Fprintf(stdout, "%s  %s  s3://%s/%s\n", p.Initiated.UTC().Format(time.RFC3339), what, bucket, p.Key)
		}
		if len(pending) == 0 {
			fmt.Fprintf(stderr, "no incomplete uploads or zero objects under s3://%s/%s\n", bucket, prefix)
		}
	}
	return nil
}
