package objstore

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	smithy "github.com/aws/smithy-go"
)

// S3 is a Store of one bucket over the SDK's client, each request made
// once (give it a client whose retryer is aws.NopRetryer: Retrying is the
// one place requests are repeated). Its errors are *Error.
type S3 struct {
	api    *s3.Client
	bucket string
}

var _ Store = S3{}

// NewS3 is the Store of bucket through api.
func NewS3(api *s3.Client, bucket string) S3 { return S3{api: api, bucket: bucket} }

// flatten turns an error of the SDK into an *Error: the answer's status,
// code, message and request id, or, when no answer came, its cause
// (context, network) without the SDK's wrappers, which hold the request,
// its body and the response.
func flatten(op string, err error) error {
	if err == nil {
		return nil
	}
	e := &Error{Op: op}
	var re *awshttp.ResponseError
	if errors.As(err, &re) && re.Response != nil {
		e.Status, e.RequestID = re.Response.StatusCode, re.ServiceRequestID()
		e.Region = re.Response.Header.Get("X-Amz-Bucket-Region")
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		e.Code, e.Message = ae.ErrorCode(), firstLine(ae.ErrorMessage())
	}
	if e.Status == 0 {
		e.Err = cause(err)
	}
	return e
}

// cause is what made a request fail, as plain errors: the context's, a
// network error (inside a *url.Error, as net/http gives it), a cut body,
// else the innermost message.
func cause(err error) error {
	var ue *url.Error
	var ne net.Error
	switch {
	case errors.Is(err, context.Canceled):
		return context.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return context.DeadlineExceeded
	case errors.As(err, &ue):
		return &url.Error{Op: ue.Op, URL: ue.URL, Err: ue.Err}
	case errors.As(err, &ne):
		return ne
	case errors.Is(err, io.ErrUnexpectedEOF):
		return io.ErrUnexpectedEOF
	}
	inner := err
	for u := errors.Unwrap(inner); u != nil; u = errors.Unwrap(inner) {
		inner = u
	}
	return errors.New(firstLine(inner.Error()))
}

func (s S3) CreateUpload(ctx context.Context, key string, meta map[string]string) (string, error) {
	out, err := s.api.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{
		Bucket: aws.String(s.bucket), Key: aws.String(key), ContentType: aws.String("application/octet-stream"), Metadata: meta,
	})
	if err != nil {
		return "", flatten("CreateMultipartUpload", err)
	}
	return aws.ToString(out.UploadId), nil
}

func (s S3) UploadPart(ctx context.Context, key, uploadID string, num int32, body io.ReadSeeker, size int64, md5 [16]byte) (string, error) {
	out, err := s.api.UploadPart(ctx, &s3.UploadPartInput{
		Bucket: aws.String(s.bucket), Key: aws.String(key), UploadId: aws.String(uploadID),
		PartNumber: aws.Int32(num), Body: body, ContentLength: aws.Int64(size),
		ContentMD5: aws.String(base64.StdEncoding.EncodeToString(md5[:])),
	})
	if err != nil {
		return "", flatten("UploadPart", err)
	}
	return normETag(aws.ToString(out.ETag)), nil
}

func (s S3) CopyPart(ctx context.Context, key, uploadID string, num int32, srcKey string, n int64) (string, error) {
	out, err := s.api.UploadPartCopy(ctx, &s3.UploadPartCopyInput{
		Bucket: aws.String(s.bucket), Key: aws.String(key), UploadId: aws.String(uploadID), PartNumber: aws.Int32(num),
		CopySource: aws.String(copySource(s.bucket, srcKey)), CopySourceRange: aws.String(fmt.Sprintf("bytes=0-%d", n-1)),
	})
	if err != nil {
		return "", flatten("UploadPartCopy", err)
	}
	if out.CopyPartResult == nil {
		return "", nil
	}
	return normETag(aws.ToString(out.CopyPartResult.ETag)), nil
}

// ListParts lists every part, 1,000 a page.
func (s S3) ListParts(ctx context.Context, key, uploadID string) ([]Part, error) {
	var all []Part
	p := s3.NewListPartsPaginator(s.api, &s3.ListPartsInput{
		Bucket: aws.String(s.bucket), Key: aws.String(key), UploadId: aws.String(uploadID), MaxParts: aws.Int32(1000),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, flatten("ListParts", err)
		}
		for _, x := range page.Parts {
			all = append(all, Part{Num: aws.ToInt32(x.PartNumber), ETag: normETag(aws.ToString(x.ETag)), Size: aws.ToInt64(x.Size)})
		}
	}
	return all, nil
}

func (s S3) Complete(ctx context.Context, key, uploadID string, etags []string) (string, error) {
	done := make([]types.CompletedPart, len(etags))
	for i, e := range etags {
		done[i].PartNumber = aws.Int32(int32(i + 1))
		if e != "" {
			done[i].ETag = aws.String(Quote(e))
		}
	}
	out, err := s.api.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket: aws.String(s.bucket), Key: aws.String(key), UploadId: aws.String(uploadID),
		MultipartUpload: &types.CompletedMultipartUpload{Parts: done},
	})
	if err != nil {
		return "", flatten("CompleteMultipartUpload", err)
	}
	return normETag(aws.ToString(out.ETag)), nil
}

func (s S3) AbortUpload(ctx context.Context, key, uploadID string) error {
	_, err := s.api.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
		Bucket: aws.String(s.bucket), Key: aws.String(key), UploadId: aws.String(uploadID),
	})
	return flatten("AbortMultipartUpload", err)
}

// ListUploads lists the incomplete uploads whose key starts with prefix,
// every page of them.
func (s S3) ListUploads(ctx context.Context, prefix string) ([]Upload, error) {
	var all []Upload
	in := &s3.ListMultipartUploadsInput{Bucket: aws.String(s.bucket)}
	if prefix != "" {
		in.Prefix = aws.String(prefix)
	}
	for {
		out, err := s.api.ListMultipartUploads(ctx, in)
		if err != nil {
			return nil, flatten("ListMultipartUploads", err)
		}
		for _, u := range out.Uploads {
			all = append(all, Upload{Key: aws.ToString(u.Key), UploadID: aws.ToString(u.UploadId), Initiated: aws.ToTime(u.Initiated)})
		}
		if !aws.ToBool(out.IsTruncated) || (aws.ToString(out.NextKeyMarker) == "" && aws.ToString(out.NextUploadIdMarker) == "") {
			return all, nil
		}
		in.KeyMarker, in.UploadIdMarker = out.NextKeyMarker, out.NextUploadIdMarker
	}
}

// List lists the objects whose key starts with prefix, every page.
func (s S3) List(ctx context.Context, prefix string) ([]Object, error) {
	var all []Object
	in := &s3.ListObjectsV2Input{Bucket: aws.String(s.bucket)}
	if prefix != "" {
		in.Prefix = aws.String(prefix)
	}
	p := s3.NewListObjectsV2Paginator(s.api, in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, flatten("ListObjectsV2", err)
		}
		for _, o := range page.Contents {
			all = append(all, Object{Key: aws.ToString(o.Key), Size: aws.ToInt64(o.Size), ETag: normETag(aws.ToString(o.ETag)), Modified: aws.ToTime(o.LastModified)})
		}
	}
	return all, nil
}

func (s S3) Head(ctx context.Context, key string) (Object, error) {
	h, err := s.api.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)})
	if err != nil {
		return Object{}, flatten("HeadObject", err)
	}
	return Object{Key: key, Size: aws.ToInt64(h.ContentLength), ETag: normETag(aws.ToString(h.ETag)), Modified: aws.ToTime(h.LastModified), Metadata: h.Metadata}, nil
}

func (s S3) Put(ctx context.Context, key string, body io.ReadSeeker, size int64, md5 [16]byte) error {
	_, err := s.api.PutObject(ctx, &s3.PutObjectInput{
		Bucket: aws.String(s.bucket), Key: aws.String(key), Body: body, ContentLength: aws.Int64(size),
		ContentMD5: aws.String(base64.StdEncoding.EncodeToString(md5[:])),
	})
	return flatten("PutObject", err)
}

func (s S3) Delete(ctx context.Context, key string) error {
	_, err := s.api.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)})
	return flatten("DeleteObject", err)
}

func (s S3) Get(ctx context.Context, key string, off, n int64, ifMatch string) (io.ReadCloser, Range, error) {
	in := &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key), Range: aws.String(fmt.Sprintf("bytes=%d-%d", off, off+n-1))}
	if ifMatch != "" {
		in.IfMatch = aws.String(Quote(ifMatch))
	}
	out, err := s.api.GetObject(ctx, in)
	if err != nil {
		return nil, Range{}, flatten("GetObject", err)
	}
	r := Range{ETag: normETag(aws.ToString(out.ETag)), Start: off, End: off + aws.ToInt64(out.ContentLength) - 1, Total: -1}
	if cr := aws.ToString(out.ContentRange); cr != "" {
		if r.Start, r.End, r.Total, err = parseContentRange(cr); err != nil {
			out.Body.Close()
			return nil, Range{}, &Error{Op: "GetObject", Status: 206, Err: err}
		}
	}
	return out.Body, r, nil
}

func (s S3) Stat(ctx context.Context) error {
	_, err := s.api.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(s.bucket)})
	return flatten("HeadBucket", err)
}

func (s S3) Location(ctx context.Context) (string, error) {
	out, err := s.api.GetBucketLocation(ctx, &s3.GetBucketLocationInput{Bucket: aws.String(s.bucket)})
	if err != nil {
		return "", flatten("GetBucketLocation", err)
	}
	return string(out.LocationConstraint), nil
}

// copySource is the x-amz-copy-source value of bucket/key.
func copySource(bucket, key string) string {
	return (&url.URL{Path: bucket + "/" + key}).EscapedPath()
}

// parseContentRange reads "bytes START-END/TOTAL" (TOTAL may be "*": -1).
func parseContentRange(s string) (start, end, total int64, err error) {
	bad := fmt.Errorf("the store answered with Content-Range %q", s)
	rest, ok := strings.CutPrefix(s, "bytes ")
	if !ok {
		return 0, 0, 0, bad
	}
	rng, tot, ok := strings.Cut(rest, "/")
	a, b, ok2 := strings.Cut(rng, "-")
	if !ok || !ok2 {
		return 0, 0, 0, bad
	}
	if start, err = strconv.ParseInt(a, 10, 64); err != nil {
		return 0, 0, 0, bad
	}
	if end, err = strconv.ParseInt(b, 10, 64); err != nil || end < start {
		return 0, 0, 0, bad
	}
	total = -1
	if tot != "*" {
		if total, err = strconv.ParseInt(tot, 10, 64); err != nil {
			return 0, 0, 0, bad
		}
	}
	return start, end, total, nil
}
