package job

import (
	"context"
	"fmt"

	"vmimport/upload"
)

// Pending is an incomplete multipart upload, or a zero object a run left.
type Pending = upload.Pending

// Kinds of Pending.
const (
	KindUpload     = upload.KindUpload
	KindZeroObject = upload.KindZeroObject
)

// Part sizes an upload may have.
const (
	MinPartSize = upload.MinPartSize
	MaxPartSize = upload.MaxPartSize
)

// Uploads are the incomplete uploads and leftover zero objects under a
// prefix of a bucket (`convert uploads`).
type Uploads struct {
	c              *upload.Client
	Bucket, Prefix string
}

// OpenUploads connects to the store st names for where,
// s3://BUCKET[/PREFIX], and checks the credentials. Close it after.
func OpenUploads(ctx context.Context, st Store, where string) (*Uploads, error) {
	bucket, prefix, err := upload.ParseS3URL(where)
	if err != nil {
		return nil, &SpecError{err}
	}
	c, err := st.Client(ctx, 4)
	if err != nil {
		return nil, err
	}
	if _, err := c.Credentials(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return &Uploads{c: c, Bucket: bucket, Prefix: prefix}, nil
}

// Close closes the connections to the store.
func (u *Uploads) Close() { u.c.Close() }

// List lists what is pending: every incomplete upload and zero object, or
// with uploadID that upload alone (an error when there is none).
func (u *Uploads) List(ctx context.Context, uploadID string) ([]Pending, error) {
	pending, err := u.c.ListUploads(ctx, u.Bucket, u.Prefix)
	if err != nil {
		return nil, err
	}
	if uploadID == "" {
		zeros, err := u.c.ListZeroObjects(ctx, u.Bucket, u.Prefix)
		if err != nil {
			return nil, err
		}
		return append(pending, zeros...), nil
	}
	var only []Pending
	for _, p := range pending {
		if p.UploadID == uploadID {
			only = append(only, p)
		}
	}
	if len(only) == 0 {
		return nil, fmt.Errorf("no incomplete upload %s under s3://%s/%s", uploadID, u.Bucket, u.Prefix)
	}
	return only, nil
}

// Drop aborts an upload (deleting the zero object beside it, and the
// resume state a run kept for it at its default place) or deletes a zero
// object. It returns the state file it removed, if any.
func (u *Uploads) Drop(ctx context.Context, p Pending) (string, error) {
	if p.Kind == KindZeroObject {
		return "", u.c.DeleteZeroObject(ctx, u.Bucket, p)
	}
	if err := u.c.AbortUpload(ctx, u.Bucket, p); err != nil {
		return "", err
	}
	return u.c.ForgetRecorded(ctx, u.Bucket, p.Key, p.UploadID)
}
