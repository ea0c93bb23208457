package upload

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// Pending is an incomplete multipart upload, or (Kind "zero-object") a
// zero object this tool left beside one: KEY.convert-zeros-ID, which a run
// killed between completing its upload and its cleanup leaves behind.
type Pending struct {
	Key       string    `json:"key"`
	UploadID  string    `json:"upload_id,omitempty"`
	Initiated time.Time `json:"initiated"`
	Kind      string    `json:"kind"` // "upload" or "zero-object"
	Size      int64     `json:"size,omitempty"`
}

// Kinds of Pending.
const (
	KindUpload     = "upload"
	KindZeroObject = "zero-object"
)

// zeroMark is in the key of every zero object (see zeroKeyFor).
const zeroMark = ".convert-zeros-"

// ListZeroObjects lists the zero objects under prefix: objects whose key
// holds ".convert-zeros-", every page of them.
func (c *Client) ListZeroObjects(ctx context.Context, bucket, prefix string) ([]Pending, error) {
	objs, err := c.Bucket(bucket).List(ctx, prefix)
	if err != nil {
		return nil, fail(fmt.Sprintf("listing the objects of bucket %q", bucket), "", 0, err)
	}
	var all []Pending
	for _, o := range objs {
		if strings.Contains(o.Key, zeroMark) {
			all = append(all, Pending{Key: o.Key, Initiated: o.Modified, Kind: KindZeroObject, Size: o.Size})
		}
	}
	return all, nil
}

// DeleteZeroObject deletes a zero object listed by ListZeroObjects.
func (c *Client) DeleteZeroObject(ctx context.Context, bucket string, p Pending) error {
	if !strings.Contains(p.Key, zeroMark) {
		return fmt.Errorf("%s is not a zero object of convert", p.Key)
	}
	if err := c.Bucket(bucket).Delete(ctx, p.Key); err != nil && httpStatus(err) != 404 {
		return fail("deleting "+p.Key, p.Key, 0, err)
	}
	return nil
}

// ListUploads lists the incomplete multipart uploads of bucket whose key
// starts with prefix, every page of them.
func (c *Client) ListUploads(ctx context.Context, bucket, prefix string) ([]Pending, error) {
	ups, err := c.Bucket(bucket).ListUploads(ctx, prefix)
	if err != nil {
		return nil, fail(fmt.Sprintf("listing the uploads of bucket %q", bucket), "", 0, err)
	}
	all := make([]Pending, 0, len(ups))
	for _, u := range ups {
		all = append(all, Pending{Key: u.Key, UploadID: u.UploadID, Initiated: u.Initiated, Kind: KindUpload})
	}
	return all, nil
}

// AbortUpload aborts one upload and deletes the zero object this tool may
// have left beside it.
func (c *Client) AbortUpload(ctx context.Context, bucket string, p Pending) error {
	s := c.Bucket(bucket)
	if err := s.AbortUpload(ctx, p.Key, p.UploadID); err != nil && apiCode(err) != "NoSuchUpload" {
		return fail(fmt.Sprintf("aborting %s of %s", p.UploadID, p.Key), p.Key, 0, err)
	}
	if !strings.Contains(p.Key, zeroMark) {
		s.Delete(ctx, zeroKeyFor(p.Key, p.UploadID))
	}
	return nil
}

// ForgetRecorded removes the state file a run kept at its default place
// (DefaultStateFile) for an upload to bucket/key through c, when it
// records the upload uploadID: once that upload is aborted, a --resume
// would only find it gone. It returns the file removed ("" if none). A
// --state-file elsewhere is the user's to remove.
func (c *Client) ForgetRecorded(ctx context.Context, bucket, key, uploadID string) (string, error) {
	path, err := DefaultStateFile(endpointName(c), bucket, key)
	if err != nil {
		return "", nil
	}
	st, err := loadState(ctx, FileState(path))
	if err != nil || st.UploadID != uploadID || st.Bucket != bucket || st.Key != key {
		return "", nil
	}
	if err := FileState(path).Remove(ctx); err != nil {
		return "", err
	}
	return path, nil
}

// ParseS3URL splits s3://bucket/key.
func ParseS3URL(s string) (bucket, key string, err error) {
	rest, ok := strings.CutPrefix(s, "s3://")
	if !ok {
		return "", "", fmt.Errorf("%q is not an s3://bucket/key address", s)
	}
	bucket, key, _ = strings.Cut(rest, "/")
	if bucket == "" {
		return "", "", fmt.Errorf("%q names no bucket", s)
	}
	if err := checkBucketName(bucket); err != nil {
		return "", "", fmt.Errorf("%s: %w", s, err)
	}
	return bucket, key, nil
}
