package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"vmimport/check"
	"vmimport/reader"
	"vmimport/upload"
	"vmimport/writer"
)

// client builds the S3 client from the store flags.
func (u *uploadOptions) client(ctx context.Context) (*upload.Client, error) {
	return upload.NewClient(ctx, upload.Config{
		Endpoint: u.endpoint, Region: u.region, JDCloudRegion: u.jdcloudRegion, PathStyle: u.pathStyle,
		Profile: u.profile, Conns: u.concurrency + 4,
	})
}

// openUpload starts the multipart upload after the preflight checks.
func openUpload(ctx context.Context, o *convertOptions, im reader.Image, stderr io.Writer) (writer.Target, error) {
	u := &o.upload
	dest := o.output
	if u.bucket != "" || u.key != "" {
		if u.bucket == "" || u.key == "" {
			return nil, usageError{errors.New("--bucket and --key go together")}
		}
		if want := fmt.Sprintf("s3://%s/%s", u.bucket, u.key); dest != want {
			return nil, usageError{fmt.Errorf("-o %s and --bucket/--key %s disagree: give one of them", dest, want)}
		}
	}
	bucket, key, err := upload.ParseS3URL(dest)
	if err != nil {
		return nil, usageError{err}
	}
	src := im.Info().Path
	if key == "" || strings.HasSuffix(key, "/") {
		// s3://bucket/ or s3://bucket/folder/: name the object after the source.
		base := filepath.Base(src)
		if src == "" {
			base = "disk"
		}
		key += strings.TrimSuffix(base, filepath.Ext(base)) + "." + o.outFormat
		o.output = "s3://" + bucket + "/" + key
	}
	if u.presignTTL < 24*time.Hour || u.presignTTL > 7*24*time.Hour {
		return nil, usageError{fmt.Errorf("--presign-ttl %s: the import link must live at least 1 day (24h) and SigV4 allows at most 7 days (168h)", u.presignTTL)}
	}
	if u.concurrency < 1 || u.concurrency > 64 {
		return nil, usageError{fmt.Errorf("--upload-concurrency %d: use 1..64", u.concurrency)}
	}
	switch u.osType {
	case "linux", "windows":
	default:
		return nil, usageError{fmt.Errorf("--os-type %q: use linux or windows", u.osType)}
	}
	// The part grid is planned on the largest output this run can make.
	hint := o.maxOutputSize(im.Size())
	// What shapes the output bytes: a resumed upload must make the same.
	output := o.outFormat
	if o.outFormat == "qcow2" {
		output = fmt.Sprintf("qcow2 %+v", o.qcow2)
	}
	var partSize int64
	if u.partSize != "auto" && u.partSize != "" {
		if partSize, err = parseSize(u.partSize); err != nil {
			return nil, usageError{fmt.Errorf("--part-size: %w", err)}
		}
	}
	if _, err := upload.PlanPartSize(hint, partSize); err != nil {
		return nil, usageError{fmt.Errorf("--part-size: %w", err)}
	}
	diskGB, err := check.DiskSize(im.Size(), o.diskSizeGB)
	if err != nil {
		diskGB = max(o.diskSizeGB, check.SuggestDiskGB(im.Size()))
	}
	var id upload.SourceID
	if src != "" {
		if id, err = upload.IdentifySource(src); err != nil {
			return nil, inputError{fmt.Errorf("%s: %w", src, err)}
		}
	} else if u.resume {
		return nil, usageError{errors.New("--resume needs a source file whose identity can be checked")}
	}
	c, err := u.client(ctx)
	if err != nil {
		return nil, err
	}
	logf := func(msg string) { fmt.Fprintf(stderr, "convert: %s\n", msg) }
	// Credentials and bucket first, then (with --import) the cloud's API,
	// then the import check: all before the upload starts, so that the
	// object's metadata holds what the check found.
	if err := c.Preflight(ctx, bucket, key); err != nil {
		return nil, err
	}
	if o.imp.enabled() {
		region, err := apiRegion(u, c)
		if err != nil {
			return nil, err
		}
		if err := o.imp.connect(ctx, region, c, logf, true); err != nil {
			return nil, err
		}
	}
	// The check's flags are those of a convert run (convert bench --to
	// uploads without a check).
	changed := func(string) bool { return false }
	if o.check.fs != nil {
		changed = o.check.fs.Changed
		name := src
		if name == "" {
			name = "the image"
		}
		if err := importCheck(ctx, o, im, name, stderr); err != nil {
			return nil, err
		}
	}
	meta := upload.ImportMeta{
		Architecture: u.architecture, OSType: u.osType, Platform: u.platform, OSVersion: u.osVersion,
		DiskFormat: o.outFormat, SystemDiskSizeGB: diskGB, ImageName: u.imageName, Description: u.description,
	}
	o.fillImport(&meta, changed)
	stored := meta
	if r := o.check.Report(); (r == nil || r.OS.OSType == "") && !changed("platform") {
		stored.Platform = "" // not known: `convert import` warns, as --import does
	}
	if stored.ImageName == "" {
		stored.ImageName = upload.DefaultImageName(key)
	}
	return upload.Start(ctx, c, upload.Options{
		Bucket: bucket, Key: key, SizeHint: hint, PartSize: partSize, Concurrency: u.concurrency,
		StateFile: u.stateFile, Resume: u.resume, Source: id, Output: output, Verify: u.verify,
		PresignTTL: u.presignTTL, Import: meta, Metadata: stored.ObjectMetadata(im.Size()), Preflighted: true,
		Log: logf,
	})
}
