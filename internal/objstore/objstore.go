// Package objstore is the one seam through which convert talks to an
// object store: Store is one bucket of an S3-compatible store, as the
// upload, the import, `convert uploads`, the batch's skip-done check and
// s3:// sources use it. S3 makes its calls with the AWS SDK, each once;
// Retrying tries them again (one Pacer per store, shared by every caller
// of a process, spaces the calls while the store pushes back); Memory keeps
// a bucket in memory for tests, with faults on demand. Every
// implementation passes the same conformance suite (storetest), as
// restic's backends do.
//
// Errors are flattened where they come from the SDK (*Error: the status,
// the store's code and message, the request id): no error of this
// package holds a request, its body or its connection.
package objstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Store is one bucket. ETags are hex, lower case, without quotes. Its
// methods are safe for concurrent use.
type Store interface {
	// CreateUpload starts a multipart upload of key, with its metadata.
	CreateUpload(ctx context.Context, key string, meta map[string]string) (uploadID string, err error)
	// UploadPart stores part num of an upload: size bytes of body, whose
	// MD5 is md5 (Content-MD5: the store refuses other bytes).
	UploadPart(ctx context.Context, key, uploadID string, num int32, body io.ReadSeeker, size int64, md5 [16]byte) (etag string, err error)
	// CopyPart makes part num a copy of the first n bytes of srcKey.
	CopyPart(ctx context.Context, key, uploadID string, num int32, srcKey string, n int64) (etag string, err error)
	// ListParts lists the parts of an upload, by number.
	ListParts(ctx context.Context, key, uploadID string) ([]Part, error)
	// Complete completes the upload of parts 1..len(etags).
	Complete(ctx context.Context, key, uploadID string, etags []string) (etag string, err error)
	// AbortUpload aborts an upload and drops its parts.
	AbortUpload(ctx context.Context, key, uploadID string) error
	// ListUploads lists the incomplete uploads whose key starts with
	// prefix.
	ListUploads(ctx context.Context, prefix string) ([]Upload, error)

	// List lists the objects whose key starts with prefix (without
	// their metadata).
	List(ctx context.Context, prefix string) ([]Object, error)
	// Head tells an object's size, ETag, time and metadata.
	Head(ctx context.Context, key string) (Object, error)
	// Put stores an object of size bytes of body, whose MD5 is md5.
	Put(ctx context.Context, key string, body io.ReadSeeker, size int64, md5 [16]byte) error
	// Delete deletes an object; a missing one is not an error.
	Delete(ctx context.Context, key string) error
	// Get reads n bytes of key from off. With ifMatch (an ETag, as Head
	// gives it) it reads only that version: another fails with status
	// 412 (Changed tells).
	Get(ctx context.Context, key string, off, n int64, ifMatch string) (io.ReadCloser, Range, error)

	// Stat checks the bucket exists and may be reached.
	Stat(ctx context.Context) error
	// Location is the bucket's region ("" for the store's default).
	Location(ctx context.Context) (string, error)
}

// Part is a part of an upload.
type Part struct {
	Num  int32
	ETag string
	Size int64
}

// Upload is an incomplete multipart upload.
type Upload struct {
	Key       string
	UploadID  string
	Initiated time.Time
}

// Object is what the store tells of an object.
type Object struct {
	Key      string
	Size     int64
	ETag     string
	Modified time.Time
	// Metadata is the user metadata (x-amz-meta-*), from Head only.
	Metadata map[string]string
}

// Range is what a Get answered: the ETag of the object read, and the
// bytes the body holds (Start..End, inclusive) of Total (-1 when the
// store did not say).
type Range struct {
	ETag              string
	Start, End, Total int64
}

// Error is a request the store refused, or that got no answer, flattened:
// nothing in it holds the request, its body or its connection.
type Error struct {
	// Op is the request: "UploadPart", "HeadObject", ...
	Op string
	// Status is the HTTP status of the answer; 0 when none came.
	Status int
	// Code and Message are the store's ("NoSuchUpload", "SlowDown").
	Code, Message string
	// RequestID is the store's id of the request, for its support.
	RequestID string
	// Region is the bucket's region when the answer told it
	// (X-Amz-Bucket-Region).
	Region string
	// Err is why no answer came (a network error, the context's), or
	// what was wrong with one; nil for an answer with an error status.
	Err error
}

// Error is the store's "Code: message", or the status; for a request
// that got no answer "S3 Op: why" (without the method and URL a
// *url.Error repeats). One line.
func (e *Error) Error() string {
	switch {
	case e.Code != "" && e.Message != "":
		return e.Code + ": " + firstLine(e.Message)
	case e.Code != "":
		return e.Code
	case e.Status != 0 && e.Err == nil:
		return fmt.Sprintf("HTTP %d %s", e.Status, http.StatusText(e.Status))
	case e.Err != nil:
		why := e.Err
		var ue *url.Error
		if errors.As(why, &ue) {
			why = ue.Err
		}
		return "S3 " + e.Op + ": " + firstLine(why.Error())
	}
	return "S3 " + e.Op + " failed"
}

// Unwrap returns the cause of a request that got no answer.
func (e *Error) Unwrap() error { return e.Err }

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// Status is the HTTP status of a store's answer behind err; 0 when none.
func Status(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// Code is the store's error code behind err ("NoSuchUpload"); "" when
// none.
func Code(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// NotFound tells an answer that the object, upload or bucket is not
// there.
func NotFound(err error) bool {
	switch Code(err) {
	case "NoSuchKey", "NoSuchUpload", "NoSuchBucket", "NotFound":
		return true
	}
	return Status(err) == http.StatusNotFound
}

// Changed tells a conditional read refused because the object is no
// longer the version asked for (412), or shorter than the range (416).
func Changed(err error) bool {
	s := Status(err)
	return s == http.StatusPreconditionFailed || s == http.StatusRequestedRangeNotSatisfiable
}

// Quote is an ETag as HTTP headers carry it.
func Quote(etag string) string {
	if etag == "" || strings.HasPrefix(etag, `"`) {
		return etag
	}
	return `"` + etag + `"`
}

// normETag is an ETag as Store gives it: unquoted, lower case.
func normETag(s string) string { return strings.ToLower(strings.Trim(s, `"`)) }
