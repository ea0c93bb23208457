package job

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"vmimport/reader"
	"vmimport/upload"
	"vmimport/writer"
)

// Client connects to the store a spec names, with room for the parts in
// flight. Credentials come from the standard AWS chain of the caller's
// environment.
func (st Store) Client(ctx context.Context, conns int) (*upload.Client, error) {
	return upload.NewClient(ctx, upload.Config{
		Endpoint: st.Endpoint, Region: st.Region, JDCloudRegion: st.JDCloudRegion, PathStyle: st.PathStyle,
		Profile: st.Profile, Conns: conns,
	})
}

// Destination is the bucket and key of an s3:// output; a key that is
// empty or ends in / is completed with the source's base name and the
// output format's extension.
func (s *Spec) Destination() (bucket, key string, err error) {
	bucket, key, err = upload.ParseS3URL(s.Output)
	if err != nil {
		return "", "", err
	}
	if key == "" || strings.HasSuffix(key, "/") {
		base := filepath.Base(s.Source)
		format := s.Format
		if format == "" {
			format = "raw"
		}
		key += strings.TrimSuffix(base, filepath.Ext(base)) + "." + format
	}
	return bucket, key, nil
}

// outputShape describes what shapes the output bytes: a resumed upload
// must make the same.
func (j *run) outputShape(plan plan) string {
	if j.s.Format == "qcow2" {
		return fmt.Sprintf("qcow2 %+v", plan.qcow2)
	}
	return j.s.Format
}

// openUpload starts the multipart upload after the preflight checks.
func (j *run) openUpload(ctx context.Context, im reader.Image, plan plan, diskGB int64) (writer.Target, error) {
	s, u := &j.s, &j.s.Upload
	bucket, key, err := s.Destination()
	if err != nil {
		return nil, &SpecError{err}
	}
	j.res.Output = "s3://" + bucket + "/" + key
	id, err := upload.IdentifySource(s.Source)
	if err != nil {
		return nil, &InputError{fmt.Errorf("%s: %w", s.Source, err)}
	}
	c, err := u.Store.Client(ctx, plan.concurrency+4)
	if err != nil {
		return nil, err
	}
	return upload.Start(ctx, c, upload.Options{
		Bucket: bucket, Key: key, SizeHint: plan.outputMax, PartSize: u.PartSize, Concurrency: plan.concurrency,
		StateFile: u.StateFile, Resume: u.Resume, Keep: u.Keep, Source: id, Output: j.outputShape(plan), Verify: u.Verify,
		PresignTTL: u.PresignTTL,
		Import: upload.ImportMeta{
			Architecture: u.Image.Architecture, OSType: u.Image.OSType, Platform: u.Image.Platform, OSVersion: u.Image.OSVersion,
			DiskFormat: s.Format, SystemDiskSizeGB: diskGB, ImageName: u.Image.Name, Description: u.Image.Description,
		},
		Log: j.notice,
	})
}
