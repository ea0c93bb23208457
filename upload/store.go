package upload

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// objectStore is the object store as an upload uses it: the S3 calls of
// one bucket, with plain arguments. s3Store makes them with the SDK;
// retrying wraps any objectStore with the retries (as restic wraps its
// backends), so that there is one place where requests are tried again.
// ETags are hex, lower case, without quotes.
type objectStore interface {
	CreateUpload(ctx context.Context, key string, meta map[string]string) (uploadID string, err error)
	UploadPart(ctx context.Context, key, uploadID string, num int32, body io.ReadSeeker, size int64, md5 [16]byte) (etag string, err error)
	// CopyPart makes part num a copy of the first n bytes of srcKey.
	CopyPart(ctx context.Context, key, uploadID string, num int32, srcKey string, n int64) (etag string, err error)
	ListParts(ctx context.Context, key, uploadID string) ([]partMeta, error)
	// Complete completes the upload of parts 1..len(etags).
	Complete(ctx context.Context, key, uploadID string, etags []string) (etag string, err error)
	AbortUpload(ctx context.Context, key, uploadID string) error
	ListUploads(ctx context.Context, prefix string) ([]Pending, error)
	Head(ctx context.Context, key string) (objectMeta, error)
	Put(ctx context.Context, key string, body io.ReadSeeker, size int64, md5 [16]byte) error
	Delete(ctx context.Context, key string) error
	// GetRange reads n bytes of key from off.
	GetRange(ctx context.Context, key string, off, n int64) (io.ReadCloser, error)
}

// partMeta is a part already in an upload.
type partMeta struct {
	Num  int32
	ETag string
	Size int64
}

// objectMeta is what HeadObject tells of an object.
type objectMeta struct {
	Size     int64
	ETag     string
	Modified time.Time
}

// s3Store is an objectStore of one bucket over the SDK's client. Its
// errors are the SDK's: the caller wraps them in an *Error.
type s3Store struct {
	api    *s3.Client
	bucket string
}

var _ objectStore = s3Store{}

func (s s3Store) CreateUpload(ctx context.Context, key string, meta map[string]string) (string, error) {
	out, err := s.api.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{
		Bucket: aws.String(s.bucket), Key: aws.String(key), ContentType: aws.String("application/octet-stream"), Metadata: meta,
	})
	if err != nil {
		return "", err
	}
	return aws.ToString(out.UploadId), nil
}

func (s s3Store) UploadPart(ctx context.Context, key, uploadID string, num int32, body io.ReadSeeker, size int64, md5 [16]byte) (string, error) {
	out, err := s.api.UploadPart(ctx, &s3.UploadPartInput{
		Bucket: aws.String(s.bucket), Key: aws.String(key), UploadId: aws.String(uploadID),
		PartNumber: aws.Int32(num), Body: body, ContentLength: aws.Int64(size),
		ContentMD5: aws.String(base64.StdEncoding.EncodeToString(md5[:])),
	})
	if err != nil {
		return "", err
	}
	return trimETag(out.ETag), nil
}

func (s s3Store) CopyPart(ctx context.Context, key, uploadID string, num int32, srcKey string, n int64) (string, error) {
	out, err := s.api.UploadPartCopy(ctx, &s3.UploadPartCopyInput{
		Bucket: aws.String(s.bucket), Key: aws.String(key), UploadId: aws.String(uploadID), PartNumber: aws.Int32(num),
		CopySource: aws.String(copySource(s.bucket, srcKey)), CopySourceRange: aws.String(fmt.Sprintf("bytes=0-%d", n-1)),
	})
	if err != nil {
		return "", err
	}
	if out.CopyPartResult == nil {
		return "", nil
	}
	return trimETag(out.CopyPartResult.ETag), nil
}

// ListParts lists every part, 1,000 a page.
func (s s3Store) ListParts(ctx context.Context, key, uploadID string) ([]partMeta, error) {
	var all []partMeta
	p := s3.NewListPartsPaginator(s.api, &s3.ListPartsInput{
		Bucket: aws.String(s.bucket), Key: aws.String(key), UploadId: aws.String(uploadID), MaxParts: aws.Int32(1000),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		for _, x := range page.Parts {
			all = append(all, partMeta{Num: aws.ToInt32(x.PartNumber), ETag: trimETag(x.ETag), Size: aws.ToInt64(x.Size)})
		}
	}
	return all, nil
}

func (s s3Store) Complete(ctx context.Context, key, uploadID string, etags []string) (string, error) {
	done := make([]types.CompletedPart, len(etags))
	for i, e := range etags {
		done[i].PartNumber = aws.Int32(int32(i + 1))
		if e != "" {
			done[i].ETag = aws.String(`"` + e + `"`)
		}
	}
	out, err := s.api.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket: aws.String(s.bucket), Key: aws.String(key), UploadId: aws.String(uploadID),
		MultipartUpload: &types.CompletedMultipartUpload{Parts: done},
	})
	if err != nil {
		return "", err
	}
	return trimETag(out.ETag), nil
}

func (s s3Store) AbortUpload(ctx context.Context, key, uploadID string) error {
	_, err := s.api.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
		Bucket: aws.String(s.bucket), Key: aws.String(key), UploadId: aws.String(uploadID),
	})
	return err
}

// ListUploads lists the incomplete uploads whose key starts with prefix,
// every page of them.
func (s s3Store) ListUploads(ctx context.Context, prefix string) ([]Pending, error) {
	var all []Pending
	in := &s3.ListMultipartUploadsInput{Bucket: aws.String(s.bucket)}
	if prefix != "" {
		in.Prefix = aws.String(prefix)
	}
	for {
		out, err := s.api.ListMultipartUploads(ctx, in)
		if err != nil {
			return nil, err
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

func (s s3Store) Head(ctx context.Context, key string) (objectMeta, error) {
	h, err := s.api.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)})
	if err != nil {
		return objectMeta{}, err
	}
	return objectMeta{Size: aws.ToInt64(h.ContentLength), ETag: trimETag(h.ETag), Modified: aws.ToTime(h.LastModified)}, nil
}

func (s s3Store) Put(ctx context.Context, key string, body io.ReadSeeker, size int64, md5 [16]byte) error {
	_, err := s.api.PutObject(ctx, &s3.PutObjectInput{
		Bucket: aws.String(s.bucket), Key: aws.String(key), Body: body, ContentLength: aws.Int64(size),
		ContentMD5: aws.String(base64.StdEncoding.EncodeToString(md5[:])),
	})
	return err
}

func (s s3Store) Delete(ctx context.Context, key string) error {
	_, err := s.api.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)})
	return err
}

func (s s3Store) GetRange(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	out, err := s.api.GetObject(ctx, &s3.GetObjectInput{
		Bucket: aws.String(s.bucket), Key: aws.String(key), Range: aws.String(fmt.Sprintf("bytes=%d-%d", off, off+n-1)),
	})
	if err != nil {
		return nil, err
	}
	return out.Body, nil
}

// copySource is the x-amz-copy-source value of bucket/key.
func copySource(bucket, key string) string {
	return (&url.URL{Path: bucket + "/" + key}).EscapedPath()
}

func trimETag(s *string) string { return strings.ToLower(strings.Trim(aws.ToString(s), `"`)) }
