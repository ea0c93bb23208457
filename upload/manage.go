package upload

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
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
	var all []Pending
	in := &s3.ListObjectsV2Input{Bucket: aws.String(bucket)}
	if prefix != "" {
		in.Prefix = aws.String(prefix)
	}
	p := s3.NewListObjectsV2Paginator(c.S3, in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("listing the objects of bucket %q: %s", bucket, short(err))
		}
		for _, o := range page.Contents {
			if k := aws.ToString(o.Key); strings.Contains(k, zeroMark) {
				all = append(all, Pending{Key: k, Initiated: aws.ToTime(o.LastModified), Kind: KindZeroObject, Size: aws.ToInt64(o.Size)})
			}
		}
	}
	return all, nil
}

// DeleteZeroObject deletes a zero object listed by ListZeroObjects.
func (c *Client) DeleteZeroObject(ctx context.Context, bucket string, p Pending) error {
	if !strings.Contains(p.Key, zeroMark) {
		return fmt.Errorf("%s is not a zero object of convert", p.Key)
	}
	if _, err := c.S3.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String(p.Key)}); err != nil && httpStatus(err) != 404 {
		return fmt.Errorf("deleting %s: %s", p.Key, short(err))
	}
	return nil
}

// ListUploads lists the incomplete multipart uploads of bucket whose key
// starts with prefix, every page of them.
func (c *Client) ListUploads(ctx context.Context, bucket, prefix string) ([]Pending, error) {
	var all []Pending
	in := &s3.ListMultipartUploadsInput{Bucket: aws.String(bucket)}
	if prefix != "" {
		in.Prefix = aws.String(prefix)
	}
	for {
		out, err := c.S3.ListMultipartUploads(ctx, in)
		if err != nil {
			return nil, fmt.Errorf("listing the uploads of bucket %q: %s", bucket, short(err))
		}
		for _, u := range out.Uploads {
			all = append(all, Pending{Key: aws.ToString(u.Key), UploadID: aws.ToString(u.UploadId), Initiated: aws.ToTime(u.Initiated), Kind: KindUpload})
		}
		if !aws.ToBool(out.IsTruncated) || (aws.ToString(out.NextKeyMarker) == "" && aws.ToString(out.NextUploadIdMarker) == "") {
			return all, nil
		}
		in.KeyMarker, in.UploadIdMarker = out.NextKeyMarker, out.NextUploadIdMarker
	}
}

// AbortUpload aborts one upload and deletes the zero object this tool may
// have left beside it.
func (c *Client) AbortUpload(ctx context.Context, bucket string, p Pending) error {
	if _, err := c.S3.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
		Bucket: aws.String(bucket), Key: aws.String(p.Key), UploadId: aws.String(p.UploadID),
	}); err != nil && apiCode(err) != "NoSuchUpload" {
		return fmt.Errorf("aborting %s of %s: %s", p.UploadID, p.Key, short(err))
	}
	if !strings.Contains(p.Key, zeroMark) {
		c.S3.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String(zeroKeyFor(p.Key, p.UploadID))})
	}
	return nil
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
